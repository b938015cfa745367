"""Paper setups as editable TOML data files: a [workload] table (the synthetic generator's knobs) and a
[cluster] table (model, instances, parallelism, engine settings) each. `models.toml` and `coefficients.toml`
beside them are data for the cost model, not setups."""

from __future__ import annotations

import importlib.resources
import tomllib

from seer.errors import SeerInputError


def presets() -> dict[str, str]:
    """Preset name -> description, from the TOML files in seer/presets."""
    out = {}
    for entry in sorted(importlib.resources.files("seer.presets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text())
            if "workload" in data or "cluster" in data:  # models.toml and coefficients.toml are not setups
                out[entry.name[:-5]] = data.get("description", "")
    return out


def load_preset(name: str) -> dict:
    """The parsed TOML of a preset."""
    known = presets()
    if name not in known:
        raise SeerInputError(f"unknown preset {name!r}; known: {', '.join(known)}")
    return tomllib.loads((importlib.resources.files("seer.presets") / f"{name}.toml").read_text())
