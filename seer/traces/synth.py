"""Synthetic rollout traces with a controllable group structure.

Lengths are log-normal with a shared group factor: log L[g, i] = mu + s_a * a[g] + s_e * e[g, i], with
a and e standard normal, then rounded and capped at `max_tokens`. Instead of trusting closed forms
(which ignore the cap and the finite group size), the three parameters (mu, s_a, s_e) are solved on
the drawn sample itself so that the generated trace *measures* the requested mean length, eta2 and
within-group CV (as `seer trace stats` computes them). Targets outside what the model can reach are
clamped with a warning: with G independent samples per group the smallest measurable eta2 is about 1/G.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.presets import load_preset
from seer.schema import check_types


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic generator (all lengths in tokens)."""

    prompts: int = 100
    group_size: int = 8
    mean_len: float = 4096.0
    eta2: float = 0.6
    within_cv: float = 0.28
    max_tokens: int = 32768
    prompt_mean: float = 512.0
    prompt_cv: float = 0.5
    seed: int = 0

    def check(self) -> None:
        problems = check_types(self)
        if problems:
            raise SeerInputError("synth: " + "; ".join(problems))
        if self.prompts < 1:
            problems.append("prompts must be >= 1")
        if self.seed < 0:  # numpy's generators take none below 0
            problems.append("seed must be >= 0")
        if self.group_size < 2:
            problems.append("group_size must be >= 2 (a group is several samples of one prompt)")
        if self.prompts * self.group_size > MAX_SAMPLES:
            problems.append(f"prompts x group_size must be at most {MAX_SAMPLES:,} samples")
        if not (1 <= self.mean_len < self.max_tokens):
            problems.append("mean_len must be >= 1 and below max_tokens")
        if not (0.0 <= self.eta2 < 1.0):
            problems.append("eta2 must be in [0, 1)")
        if not (self.within_cv > 0.0):
            # 0 makes a group's samples identical: the group then explains all the variance, which eta2 < 1 excludes
            problems.append("within_cv must be > 0 (0 would make eta2 1)")
        elif self.within_cv > 3.0:
            problems.append("within_cv must be at most 3")
        if not (1 <= self.prompt_mean <= MAX_PROMPT_MEAN):
            problems.append(f"prompt_mean must be in [1, {MAX_PROMPT_MEAN:.0e}]")
        if not (0 <= self.prompt_cv <= MAX_PROMPT_CV):
            problems.append(f"prompt_cv must be in [0, {MAX_PROMPT_CV:g}]")
        if problems:
            raise SeerInputError("synth: " + "; ".join(problems))


MAX_PROMPT_MEAN, MAX_PROMPT_CV = 1e9, 10.0  # far past any model's context, and lengths still fit int64
MAX_SAMPLES = 100_000_000  # rows of a synthetic trace: beyond it the arrays outgrow a workstation's memory


def preset_config(name: str, **overrides) -> SynthConfig:
    """The SynthConfig of a preset's [workload] table, with keyword overrides (None means keep)."""
    workload = dict(load_preset(name).get("workload", {}))
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = set(workload) - fields
    if unknown:
        raise SeerInputError(f"preset {name}: unknown workload key(s) {', '.join(sorted(unknown))}")
    bad = sorted(set(overrides) - fields)  # a misspelt keyword from Python (the command line's flags cannot be)
    if bad:
        raise SeerInputError(
            f"preset {name}: unknown workload key(s) {', '.join(bad)}; valid: {', '.join(sorted(fields))}"
        )
    workload.update({k: v for k, v in overrides.items() if v is not None})
    cfg = SynthConfig(**workload)
    try:
        cfg.check()
    except SeerInputError as exc:
        raise SeerInputError(f"preset {name}: {str(exc).removeprefix('synth: ')}") from None
    return cfg


def _stats(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, eta2, within_cv) of a (groups, G) length matrix, as trace_stats defines them."""
    mean = x.mean()
    gm = x.mean(axis=1)
    ss_total = ((x - mean) ** 2).sum()
    eta2 = (x.shape[1] * ((gm - mean) ** 2).sum() / ss_total) if ss_total > 0 else math.nan
    within = (x.std(axis=1) / gm).mean()
    return float(mean), float(eta2), float(within)


def _bisect(fn, target: float, lo: float, hi: float, iters: int = 40) -> float:
    """Solve fn(p) = target for an increasing fn on [lo, hi], clamping at the ends."""
    if fn(lo) >= target:
        return lo
    if fn(hi) <= target:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def synthesize(cfg: SynthConfig, progress: bool | None = False) -> pd.DataFrame:
    """Draw a trace that measures cfg's mean length, eta2 and within-group CV (see module docstring); `progress`
    shows the fit's rounds (None: when writing to a terminal)."""
    from seer.progress import progress_bar

    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    P, G = cfg.prompts, cfg.group_size
    a = rng.standard_normal((P, 1))
    e = rng.standard_normal((P, G))
    cap = float(cfg.max_tokens)

    def lengths(mu: float, sa: float, se: float) -> np.ndarray:
        return np.clip(np.rint(np.exp(mu + sa * a + se * e)), 1.0, cap)

    mu, sa, se = math.log(cfg.mean_len), 0.5, 0.3
    # each round re-fits the three knobs over every sample: seconds per round at a million samples
    for _ in progress_bar(progress, range(6), desc="fitting lengths", unit="round", leave=False):
        se = _bisect(lambda s: _stats(lengths(mu, sa, s))[2], cfg.within_cv, 0.0, 3.0)
        sa = _bisect(lambda s: _stats(lengths(mu, s, se))[1], cfg.eta2, 0.0, 4.0)
        mu = _bisect(lambda m: _stats(lengths(m, sa, se))[0], cfg.mean_len, -30.0, math.log(cap) + 10.0)
    x = lengths(mu, sa, se)
    mean, eta2, within = _stats(x)
    for name, got, want, tol in (
        ("mean_len", mean, cfg.mean_len, 0.02 * cfg.mean_len),
        ("eta2", eta2, cfg.eta2, 0.03),
        ("within_cv", within, cfg.within_cv, 0.03),
    ):
        if name == "eta2" and P == 1:  # one group has no spread between groups: eta2 is undefined (it said "got 0")
            if want:
                warnings.warn(f"synth: eta2 target {want:g} has no meaning for one prompt (one group)", stacklevel=2)
        elif not abs(got - want) <= tol:  # NaN (all lengths equal) counts as a miss
            warnings.warn(f"synth: {name} target {want:g} not reachable with these knobs; got {got:.4g}", stacklevel=2)

    if cfg.prompt_cv > 0:
        s2 = math.log1p(cfg.prompt_cv**2)
        plen = np.exp(rng.normal(math.log(cfg.prompt_mean) - s2 / 2, math.sqrt(s2), P))
    else:
        plen = np.full(P, cfg.prompt_mean)
    plen = np.maximum(1, np.rint(plen)).astype(np.int64)
    return pd.DataFrame(
        {
            "prompt_id": np.repeat(np.arange(P), G),
            "sample_id": np.tile(np.arange(G), P),
            "prompt_len": np.repeat(plen, G),
            "output_len": x.astype(np.int64).ravel(),
            "max_tokens": cfg.max_tokens,
        }
    )
