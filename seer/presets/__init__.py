"""Paper setups as editable TOML data files (workload now; the cluster joins them in the simulator)."""
