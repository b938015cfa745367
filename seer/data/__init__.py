"""Traces the project generated itself (see benchmarks/default_trace.py), bundled as defaults."""
