"""Fitting the cost model to measured step profiles (benchmarks/data/calibration/*.csv or a real backend's log)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.sim.costmodel import Coefficients, CostModel, family_of, fit_coefficients
from seer.sim.shapes import Hardware, Parallelism, model_shape


def profile_rows(df: pd.DataFrame, coef: Coefficients | None = None):
    """Rows of a step profile (model, kind, batch, ctx, q_len, ms) as fit inputs."""
    rows = []
    for rec in df.itertuples(index=False):
        if rec.kind not in ("decode", "verify", "prefill"):
            continue
        cm = CostModel(model_shape(rec.model), Hardware(), Parallelism(), coef or Coefficients(0, 0, 1, 1, 1, 1, 1))
        if rec.kind == "prefill":
            q, ctx, logits = np.array([rec.q_len]), np.array([0]), 1
        else:
            q, ctx, logits = np.full(rec.batch, rec.q_len), np.full(rec.batch, rec.ctx), None
        rows.append((cm, q, ctx, logits, rec.ms / 1000.0, rec.kind, rec.model))
    if not rows:
        raise SeerInputError("profile has no decode, verify or prefill rows")
    return rows


def fit_profile(df: pd.DataFrame) -> dict[str, Coefficients]:
    """One coefficient set per model family present in the profile."""
    rows = profile_rows(df)
    out = {}
    for family in sorted({family_of(r[0].shape) for r in rows}):
        sel = [r[:5] for r in rows if family_of(r[0].shape) == family]
        out[family] = fit_coefficients(sel)
    return out


def fit_errors(df: pd.DataFrame, fits: dict[str, Coefficients]) -> pd.DataFrame:
    """Per-row predicted vs measured step time under the given fits."""
    out = []
    for cm, q, ctx, logits, secs, kind, model in profile_rows(df):
        pred = CostModel(cm.shape, cm.hw, cm.par, fits[family_of(cm.shape)]).step_time(q, ctx, logits)
        out.append(
            {
                "model": model,
                "kind": kind,
                "batch": len(q) if kind != "prefill" else 1,
                "ctx": int(ctx[0]),
                "q_len": int(q[0]),
                "measured_ms": secs * 1e3,
                "predicted_ms": pred * 1e3,
                "ape": abs(pred - secs) / secs,
            }
        )
    return pd.DataFrame(out)
