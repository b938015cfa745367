"""Offline studies built on the project's components (not part of the policy or backend layers)."""
