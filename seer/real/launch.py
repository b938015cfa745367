"""Engine hosts as Ray actors: one vLLM engine per instance, each in its own process, with explicit resources.

On a CPU machine an instance gets `cpus` cores (its OpenMP threads); on GPUs it gets `gpus` devices (its
tensor-parallel group). All instances are bundles of one placement group with the SPREAD strategy, so an
instance's devices stay together and instances spread over the nodes of the cluster: the local machine, or
the cluster `RAY_ADDRESS` names. The driver talks to each actor through an `ActorHost`, which has the same calls
as an in-process `LocalHost`.
"""

from __future__ import annotations

import os
import signal

from seer.errors import SeerInputError
from seer.ray_init import init_ray
from seer.real.host import EngineHost, EngineLost, HostStep
from seer.real.settings import ENVIRONMENT, EngineSettings

# what an engine's process needs from the driver's environment (caches, logging, thread counts)
FORWARDED = ("VLLM_", "OMP_", "HF_", "TORCHINDUCTOR_", "TOKENIZERS_", "SEER_", "TRANSFORMERS_")


class ActorHost:
    """An `EngineHost` running as a Ray actor."""

    def __init__(self, actor, info: dict):
        self.actor, self.info = actor, info

    def call(self, name: str, *args):
        import ray

        return ray.get(getattr(self.actor, name).remote(*args))

    def send(self, name: str, *args) -> None:
        getattr(self.actor, name).remote(*args)  # calls from one caller run in order on the actor

    def start_step(self):
        return self.actor.step.remote()

    def result(self, pending) -> HostStep:
        import ray

        try:
            return ray.get(pending)
        except ray.exceptions.RayActorError as exc:
            raise EngineLost(str(exc).splitlines()[0] if str(exc) else "engine actor died") from None

    def kill(self) -> None:
        """SIGKILL the actor's process (the local node); elsewhere Ray kills it."""
        import ray

        if self.info.get("node") == os.uname().nodename:
            try:
                os.kill(int(self.info["pid"]), signal.SIGKILL)
                return
            except ProcessLookupError:
                return
        ray.kill(self.actor, no_restart=True)


def _env(cpus: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}
    for key, value in ENVIRONMENT:
        env.setdefault(key, value)
    env["OMP_NUM_THREADS"] = str(cpus)
    return env


def ensure_ray(cpus_needed: int) -> None:
    """Connect to the cluster RAY_ADDRESS names, or start a local one (never twice)."""
    try:
        import ray
    except ImportError:
        raise SeerInputError("--launch ray needs Ray: pip install 'seer-rollout[ray]'") from None
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    cores = os.cpu_count() or 1
    if not address and cpus_needed > cores:  # a local Ray is told it has them: the engines will share the cores
        import warnings

        warnings.warn(
            f"the engine actors ask for {cpus_needed} CPUs and this machine has {cores}: a local Ray is started with "
            f"{cpus_needed}, and the engines share the cores (step times grow)",
            stacklevel=2,
        )
    kwargs = {} if address else {"num_cpus": max(cpus_needed, cores)}
    init_ray(address=address, include_dashboard=False, log_to_driver=False, **kwargs)


def _check_fits(bundle: dict, instances: int) -> None:
    """Fail at once, in one line, when the cluster cannot hold the instances (rather than wait for Ray)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = sum(min(int(node.get(k, 0) // v) for k, v in bundle.items()) for node in nodes)
    if fits < instances:
        have = ", ".join(f"{k} {ray.cluster_resources().get(k, 0):g}" for k in bundle)
        raise SeerInputError(
            f"Ray cannot place {instances} instance(s) of {bundle} on this cluster ({len(nodes)} node(s), {have}); "
            "lower --instances or the per-instance resources"
        )


def launch_actors(
    settings: EngineSettings, instances: int, cpus: int = 1, gpus: int = 0, timeout_s: float = 600.0
) -> list[ActorHost]:
    """Start one engine actor per instance and wait until every engine is built."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ensure_ray(cpus * instances)
    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    _check_fits(bundle, instances)
    pg = placement_group([bundle] * instances, strategy="SPREAD")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        ray.util.remove_placement_group(pg)
        raise SeerInputError(
            f"Ray cannot place {instances} instance(s) of {bundle} on this cluster ({ray.cluster_resources()})"
        )
    cls = ray.remote(EngineHost)
    actors = [
        cls.options(
            num_cpus=cpus,
            num_gpus=gpus,
            runtime_env={"env_vars": _env(cpus)},
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
        ).remote(settings)
        for i in range(instances)
    ]
    infos = ray.get([a.describe.remote() for a in actors], timeout=timeout_s)
    return [ActorHost(a, info) for a, info in zip(actors, infos)]
