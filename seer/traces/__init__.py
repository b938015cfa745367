"""Traces: schema, validation, Parquet/CSV/JSONL I/O, converters, synthetic generator, statistics."""

from seer.traces.io import load_trace, save_trace, validate_trace

__all__ = ["load_trace", "save_trace", "validate_trace"]
