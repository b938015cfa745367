"""The SimPy backend: cost model, simulated instances with paged KV, cluster presets, and the driver."""

from seer.sim.cluster import ClusterConfig, load_cluster
from seer.sim.driver import SimDriver, simulate

__all__ = ["ClusterConfig", "SimDriver", "load_cluster", "simulate"]
