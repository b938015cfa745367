"""The vLLM backend: engine adapters, the driver (virtual or wall clocks), models, the group drafter inside vLLM,
and `seer run`."""
