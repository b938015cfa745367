"""A step-time model calibrated on a real engine's measured steps (`seer calibrate`), saved as TOML.

    T = overhead + c_wait·waiting + c_row·sampled rows + c_tok·tokens + c_kv·KV tokens read
        + c_attn·attention pairs + c_pair·pairs of multi-token rows

Every term is one of the sums the simulator already prices a step by (`StepTimeModel.step_time_sums`), and a
recorded step carries the same sums, read from vLLM's scheduler output (`seer.real.host.step_shape`): prefill
tokens and their quadratic attention, decode rows and their context, speculative verify rows, and the engine's
per-step CPU cost, which grows with the rows it samples and the requests it keeps waiting. Which terms a model
keeps is chosen by held-out error (forward selection, k-fold cross-validation on relative error), not by count:
a term that does not lower the held-out error of the steps is left out.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.fileio import input_problem
from seer.schema import show
from seer.sim.costmodel import AffineDecode, nnls_relative

TERMS = (
    "overhead_s",
    "per_waiting_s",
    "per_sampled_row_s",
    "per_token_s",
    "per_kv_token_s",
    "per_attn_pair_s",
    "per_score_pair_s",
)
MAX_COEFFICIENT_S = 3600.0  # seconds per unit of a term (per step for overhead_s)
FEATURES = ("one", "waiting", "logits", "tokens", "kv_tokens", "attn_pairs", "score_pairs")
SHAPE_COLUMNS = ("sched_tokens", "sched_kv_tokens", "attn_pairs", "score_pairs", "logits")


class StepFit(AffineDecode):
    """A calibrated step-time model (`TERMS`, seconds per unit; absent terms are zero). It has no roofline terms,
    so it gives no lower bound; `kv_bytes_per_token` only prices global-pool transfers."""

    def __init__(self, coefficients: Mapping[str, float], kv_bytes_per_token: float = 0.0, meta: dict | None = None):
        unknown = set(coefficients) - set(TERMS)
        if unknown:
            raise SeerInputError(f"step model: unknown terms {sorted(unknown)}; valid: {', '.join(TERMS)}")
        try:
            self.c = np.array([float(coefficients.get(t, 0.0)) for t in TERMS])
        except (TypeError, ValueError, OverflowError):  # a string, or an integer of 400 digits (no float holds it)
            raise SeerInputError(
                f"step model: every coefficient must be a number of seconds, at most {MAX_COEFFICIENT_S:,.0f}"
            ) from None
        if not np.isfinite(self.c).all() or (self.c < 0).any():
            raise SeerInputError("step model: every coefficient must be a finite number >= 0")
        if (self.c > MAX_COEFFICIENT_S).any():  # a finite 1e308 still makes every step time inf, every result NaN
            i = int(np.argmax(self.c > MAX_COEFFICIENT_S))
            raise SeerInputError(
                f"step model: {TERMS[i]} is {self.c[i]:.3g} s per unit; a coefficient above {MAX_COEFFICIENT_S:,.0f} "
                "s (an hour) describes no engine"
            )
        if self.c[0] <= 0:
            raise SeerInputError("step model: overhead_s must be > 0 (every step takes time)")
        self.kv_bytes_per_token = float(kv_bytes_per_token)
        self.beta = float(self.c[4] + self.c[5])  # a decode row of context k reads k + 1 KV tokens and pairs
        self.meta = dict(meta or {})

    @property
    def coefficients(self) -> dict[str, float]:
        return {t: float(v) for t, v in zip(TERMS, self.c) if v > 0}

    def lower_bound(self, *args, **kwargs) -> None:
        return None

    def lower_bound_steps(self, *args, **kwargs) -> None:
        return None

    def step_time_sums(self, tokens, kv_tokens, attn_pairs, score_pairs, logits=None, waiting=0):
        c = self.c
        rows = tokens if logits is None else logits  # every token of a verify row is scored
        return (
            c[0]
            + c[1] * waiting
            + c[2] * rows
            + c[3] * tokens
            + c[4] * kv_tokens
            + c[5] * attn_pairs
            + (c[6] * score_pairs)
        )

    def alpha(self, batch, waiting=0):
        b = np.asarray(batch, dtype=np.float64)
        c = self.c
        t = c[0] + c[1] * waiting + (c[2] + c[3] + c[4] + c[5]) * b
        return t if t.ndim else float(t)

    def describe(self) -> dict:
        return {"model": "step model calibrated on measured steps", "coefficients": self.coefficients, **self.meta}

    def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        return design(features) @ self.c

    # ---- calibration -------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, features: Mapping[str, np.ndarray], seconds: np.ndarray, terms: Sequence[str] | None = None, folds: int = 5
    ) -> StepFit:
        """Non-negative least squares on relative error over `terms` (by default chosen by `select_terms`)."""
        y = np.asarray(seconds, dtype=np.float64)
        X = design(features)
        chosen = select_terms(X, y, folds)[0] if terms is None else list(terms)
        unknown = [t for t in chosen if t not in TERMS]
        if unknown:
            raise SeerInputError(f"calibrate: unknown term {unknown[0]!r}; valid: {', '.join(TERMS)}")
        cols = [TERMS.index(t) for t in chosen]
        idle = [t for t, c in zip(chosen, cols) if c and not X[:, c].any()]
        if idle:  # its coefficient would be 0 whatever the machine does: the term was printed as fitted, and was not
            raise SeerInputError(
                f"calibrate: term {idle[0]} has nothing to fit: every measured step has none of it "
                f"(its feature is 0 in all {len(y):,} steps)"
            )
        coef = np.zeros(len(TERMS))
        coef[cols] = nnls_relative(X[:, cols], y)
        coef[0] = max(coef[0], 1e-9)  # a step never takes no time (the simulator would not advance)
        held = cross_validated_mape(X[:, cols], y, folds)
        mape = float(np.mean(np.abs(X @ coef - y) / y))
        meta = {"terms": chosen, "steps": int(len(y)), "mape": mape, "mape_heldout": held}
        return cls(dict(zip(TERMS, coef)), meta=meta)

    # ---- files ---------------------------------------------------------------------------------------

    def to_toml(self) -> str:
        lines = ["# seer step-time model (seer calibrate); seconds per unit of each term", "[coefficients]"]
        lines += [f"{t} = {float(v)!r}" for t, v in zip(TERMS, self.c)]
        lines += ["", "[calibration]"]
        for k, v in self.meta.items():
            if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
                lines.append(f"{k} = {json.dumps([x if isinstance(x, int) else float(x) for x in v])}")
            elif isinstance(v, (str, list, tuple)):  # a JSON string or list of strings is a TOML one
                lines.append(f"{k} = {json.dumps(v if isinstance(v, str) else [str(x) for x in v])}")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                lines.append(f"{k} = {v!r}")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str) -> StepFit:
        """A model written by `seer calibrate`; one clear line on a missing file or a malformed one."""
        if not str(path):  # open("") would say "No such file" of nothing
            raise SeerInputError("the step model's path is empty (--cost-model '')")
        problem = input_problem(path)
        if problem and problem != "no such file":
            raise SeerInputError(f"{path}: {problem}")
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise SeerInputError(f"{path}: cannot read the step model ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SeerInputError(f"{path}: not a TOML step model ({exc})") from None
        coef = doc.get("coefficients")
        if not isinstance(coef, dict) or not coef:
            raise SeerInputError(f"{path}: no [coefficients] table (write one with `seer calibrate`)")
        bad = [k for k, v in coef.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise SeerInputError(f"{path}: coefficient {bad[0]} must be a number")
        calibration = doc.get("calibration", {})
        problem = _calibration_problem(calibration)
        if problem:
            raise SeerInputError(f"{path}: [calibration] {problem}")
        try:
            return cls(coef, meta=dict(calibration, source=path))
        except SeerInputError as exc:
            raise SeerInputError(f"{path}: {exc}") from None


REFERENCE = ("reference_batch", "reference_median_s", "reference_steps")  # decode medians of the calibration runs


def _calibration_problem(table) -> str | None:
    """What is wrong with a step model's [calibration] table (None when nothing): `seer fidelity` reads its
    reference medians as equally long lists of batch sizes, positive seconds and step counts."""
    if not isinstance(table, dict):
        return "must be a table"
    for key in ("terms", "runs"):  # names, as `seer calibrate` writes them
        names = table.get(key, [])
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            return f"{key} must be a list of names, not {show(names)}"
    unknown = [t for t in table.get("terms", []) if t not in TERMS]
    if unknown:
        return f"terms: unknown term {unknown[0]!r}; valid: {', '.join(TERMS)}"
    present = [k for k in REFERENCE if k in table]
    if not present:
        return None
    if len(present) < len(REFERENCE):
        return f"has {', '.join(present)} without {', '.join(k for k in REFERENCE if k not in table)}"
    lists = [table[k] for k in REFERENCE]
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) > 1:
        return f"{', '.join(REFERENCE)} must be lists of the same length"
    batch, median, steps = lists
    if not all(type(b) is int and b >= 1 for b in batch + steps):
        return "reference_batch and reference_steps must hold positive integers"
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf") for v in median):
        return "reference_median_s must hold positive seconds"
    return None


def design(features: Mapping[str, np.ndarray]) -> np.ndarray:
    n = len(features["tokens"])
    cols = [np.ones(n) if f == "one" else np.asarray(features[f], dtype=np.float64) for f in FEATURES]
    return np.stack(cols, axis=-1)


def cross_validated_mape(X: np.ndarray, y: np.ndarray, folds: int) -> float:
    """Mean relative error of each step predicted by a model fitted without its fold (folds interleaved, so each
    sees the whole run)."""
    fold = np.arange(len(y)) % max(2, folds)
    err = np.empty(len(y))
    for f in np.unique(fold):
        test = fold == f
        coef = nnls_relative(X[~test], y[~test])
        err[test] = np.abs(X[test] @ coef - y[test]) / y[test]
    return float(err.mean())


def select_terms(X: np.ndarray, y: np.ndarray, folds: int = 5, min_gain: float = 0.002) -> tuple[list[str], float]:
    """Stepwise selection from the overhead alone: add the term that lowers the held-out MAPE most while it lowers
    it by at least `min_gain` (absolute), then drop each term the others do without (within `min_gain`)."""
    chosen = [0]
    best = cross_validated_mape(X[:, chosen], y, folds)
    while True:
        trials = {j: cross_validated_mape(X[:, chosen + [j]], y, folds) for j in range(len(TERMS)) if j not in chosen}
        trials = {j: e for j, e in trials.items() if np.isfinite(e)}
        if not trials:
            break
        j = min(trials, key=trials.get)
        if best - trials[j] < min_gain:
            break
        chosen.append(j)
        best = trials[j]
    # then backward: a term picked early as a proxy for later ones goes if the rest do as well without it
    while len(chosen) > 1:
        trials = {j: cross_validated_mape(X[:, [c for c in chosen if c != j]], y, folds) for j in chosen[1:]}
        j = min(trials, key=trials.get)
        if trials[j] - best >= min_gain:
            break
        chosen.remove(j)
        best = min(best, trials[j])
    return [TERMS[j] for j in sorted(chosen)], best


def step_features(steps: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's features of recorded steps: the scheduler's exact step shape where the run recorded it, else
    (older runs) approximations from vLLM's counters (tokens = prompt + generation tokens, every running
    request a decode row over the live context)."""
    f = {"waiting": steps["waiting"].to_numpy(np.float64)}
    if all(c in steps for c in SHAPE_COLUMNS) and (steps["sched_tokens"] > 0).any():
        f["tokens"] = steps["sched_tokens"].to_numpy(np.float64)
        f["kv_tokens"] = steps["sched_kv_tokens"].to_numpy(np.float64)
        f["attn_pairs"] = steps["attn_pairs"].to_numpy(np.float64)
        f["score_pairs"] = steps["score_pairs"].to_numpy(np.float64)
        f["logits"] = steps["logits"].to_numpy(np.float64)
        return f
    tokens = (steps["prompt_tokens"] + steps["generation_tokens"]).to_numpy(np.float64)
    f["tokens"] = tokens
    f["kv_tokens"] = steps["context_tokens"].to_numpy(np.float64) + tokens
    f["attn_pairs"] = f["kv_tokens"]
    f["score_pairs"] = np.zeros(len(steps))
    f["logits"] = np.maximum(steps["running"].to_numpy(np.float64), 1.0)
    return f


def measured_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """The steps that computed something (vLLM also returns empty steps while nothing is scheduled)."""
    if all(c in steps for c in SHAPE_COLUMNS) and (steps["sched_tokens"] > 0).any():
        return steps[steps["sched_tokens"] > 0]
    return steps[(steps["prompt_tokens"] + steps["generation_tokens"]) > 0]
