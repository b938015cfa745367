"""Statistics of a trace that test the Seer premise: do responses to one prompt have similar lengths
and share text?

Definitions (all over groups = rows sharing a `prompt_id`):
- eta2: between-group sum of squares over total sum of squares of output lengths (population form),
  the share of length variance explained by the prompt. NaN when all lengths are equal or there is one group.
- within_cv: mean over groups (>= 2 samples, mean > 0) of population std / mean.
- across_cv: population std / mean of the group means (NaN for one group).
- rho_first_max_rest: Spearman rank correlation, over groups with >= 2 samples, between the length of
  the first sample (lowest sample_id) and the max length of the others: how well one probe predicts
  the group's longest response (what context-aware scheduling relies on).
- straggler_share: share of groups (>= 2 samples) whose max exceeds 2x their median.
- ngram4_in_group / ngram4_other_group: for traces with `output_ids`, mean share of a response's
  distinct 4-grams found in the other responses of its own group, and in the responses of a randomly
  chosen other group (seeded). The gap is the text-sharing premise of grouped speculation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from seer.progress import progress_bar

SUMMARY_KEYS = (
    "groups",
    "samples",
    "mean_len",
    "eta2",
    "within_cv",
    "across_cv",
    "rho_first_max_rest",
    "straggler_share",
)


def eta_squared(lengths, groups) -> float:
    """Between-group over total sum of squares (population).

    NaN when every length is equal, or when no group has two samples (then it is trivially 1).
    """
    x = np.asarray(lengths, dtype=np.float64)
    g = pd.Series(x).groupby(np.asarray(groups), sort=False)
    if g.size().max() < 2 or g.ngroups < 2:  # one group: no variance between groups to explain (it read 0)
        return math.nan
    mean = x.mean()
    ss_total = float(((x - mean) ** 2).sum())
    if ss_total == 0.0:
        return math.nan
    ss_between = float((g.size() * (g.mean() - mean) ** 2).sum())
    return min(1.0, max(0.0, ss_between / ss_total))


def within_group_cv(lengths, groups) -> float:
    """Mean over groups with >= 2 samples and positive mean of population std / mean."""
    g = pd.Series(np.asarray(lengths, dtype=np.float64)).groupby(np.asarray(groups), sort=False)
    size, mean, std = g.size(), g.mean(), g.std(ddof=0)
    keep = (size >= 2) & (mean > 0)
    return float((std[keep] / mean[keep]).mean()) if keep.any() else math.nan


def across_group_cv(lengths, groups) -> float:
    """Population CV of the group means (NaN for one group: nothing to spread across)."""
    means = pd.Series(np.asarray(lengths, dtype=np.float64)).groupby(np.asarray(groups), sort=False).mean()
    m = float(means.mean())
    return float(means.std(ddof=0) / m) if m > 0 and len(means) > 1 else math.nan


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=np.float64)).rank(method="average").to_numpy()
    rb = pd.Series(np.asarray(b, dtype=np.float64)).rank(method="average").to_numpy()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _multi_sample_groups(df: pd.DataFrame) -> pd.DataFrame:
    sizes = df.groupby("prompt_id", sort=False)["sample_id"].transform("size")
    return df[sizes >= 2]


def first_vs_max_rest(df: pd.DataFrame) -> float:
    """Spearman rho between each group's first sample length and the max of its other samples."""
    multi = _multi_sample_groups(df).sort_values(["prompt_id", "sample_id"], kind="stable")
    if multi.empty:
        return math.nan
    g = multi.groupby("prompt_id", sort=False)["output_len"]
    first = g.first()
    rest_max = multi[g.cumcount() > 0].groupby("prompt_id", sort=False)["output_len"].max()
    return spearman(first.loc[rest_max.index], rest_max)


def straggler_share(df: pd.DataFrame) -> float:
    """Share of multi-sample groups whose max length exceeds twice their median."""
    multi = _multi_sample_groups(df)
    if multi.empty:
        return math.nan
    g = multi.groupby("prompt_id", sort=False)["output_len"]
    return float((g.max() > 2 * g.median()).mean())


def _ngram_codes(ids: np.ndarray, n: int = 4) -> np.ndarray:
    """Distinct n-grams of a token sequence as uint64 codes (exact for vocabularies below 2^16)."""
    ids = np.asarray(ids, dtype=np.uint64)
    if len(ids) < n:
        return np.empty(0, dtype=np.uint64)
    code = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    base = np.uint64(1 << 16)
    for k in range(n):
        # beyond 2^16 this is a 64-bit polynomial hash; collisions are negligible for a share estimate
        code = code * base + ids[k : len(ids) - n + 1 + k]
    return np.unique(code)


def ngram_sharing(df: pd.DataFrame, n: int = 4, seed: int = 0, progress: bool | None = None) -> tuple[float, float]:
    """(in-group share, other-group share) of each response's distinct n-grams; NaN without tokens."""
    if "output_ids" not in df.columns:
        return math.nan, math.nan
    multi = _multi_sample_groups(df)
    group_ids = list(dict.fromkeys(multi["prompt_id"]))
    if len(group_ids) < 2:
        return math.nan, math.nan
    grams = {
        gid: [_ngram_codes(ids, n) for ids in sub["output_ids"]] for gid, sub in multi.groupby("prompt_id", sort=False)
    }
    rng = np.random.default_rng(seed)
    union = {gid: np.unique(np.concatenate(lst)) if lst else np.empty(0, np.uint64) for gid, lst in grams.items()}
    own, other = [], []
    for gi, gid in enumerate(progress_bar(progress, group_ids, desc="n-gram sharing", unit="group")):
        lst = grams[gid]
        # count, per n-gram, how many responses of the group contain it; "in another response" = count >= 2
        allg = np.concatenate(lst) if lst else np.empty(0, np.uint64)
        uniq, counts = np.unique(allg, return_counts=True)
        j = int(rng.integers(len(group_ids) - 1))
        other_gid = group_ids[j + 1 if j >= gi else j]
        for codes in lst:
            if len(codes) == 0:
                continue
            c = counts[np.searchsorted(uniq, codes)]
            own.append(float((c >= 2).mean()))
            other.append(float(np.isin(codes, union[other_gid], assume_unique=True).mean()))
    if not own:
        return math.nan, math.nan
    return float(np.mean(own)), float(np.mean(other))


def trace_stats(df: pd.DataFrame, ngrams: bool = True, progress: bool | None = None) -> dict:
    """All statistics of a validated trace, as a JSON-ready dict (NaN for undefined values)."""
    lengths = df["output_len"].to_numpy(dtype=np.float64)
    groups = df["prompt_id"].to_numpy()
    sizes = df.groupby("prompt_id", sort=False).size()
    out = {
        "groups": int(len(sizes)),
        "samples": int(len(df)),
        "group_size_min": int(sizes.min()),
        "group_size_max": int(sizes.max()),
        "mean_len": float(lengths.mean()),
        "median_len": float(np.median(lengths)),
        "p90_len": float(np.percentile(lengths, 90)),
        "max_len": int(lengths.max()),
        "mean_prompt_len": float(df["prompt_len"].mean()),
        "output_tokens": int(lengths.sum()),
        "eta2": eta_squared(lengths, groups),
        "within_cv": within_group_cv(lengths, groups),
        "across_cv": across_group_cv(lengths, groups),
        "rho_first_max_rest": first_vs_max_rest(df),
        "straggler_share": straggler_share(df),
    }
    if "max_tokens" in df.columns:
        out["capped_share"] = float((df["output_len"] >= df["max_tokens"]).mean())
    if ngrams and "output_ids" in df.columns:
        out["ngram4_in_group"], out["ngram4_other_group"] = ngram_sharing(df, progress=progress)
    return out
