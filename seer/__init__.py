"""seer: rollout scheduling for synchronous LLM RL, in simulation and on real engines."""

__version__ = "0.1.0"
