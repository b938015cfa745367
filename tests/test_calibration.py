"""The calibrated step model (`seer calibrate`, `--cost-model`): fitting, term selection, files, and its use in the
simulator; and the group prompt computed once per instance under the prefix cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_seer
from hypothesis import given, settings
from hypothesis import strategies as st

from seer.errors import SeerInputError
from seer.sim.stepfit import TERMS, StepFit

BUNDLED = "seer/data/gsm8k_smollm2.parquet"


def synthetic_steps(n=400, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, 64, n).astype(float)
    prefill = np.where(rng.random(n) < 0.2, rng.integers(50, 800, n), 0).astype(float)
    ctx = rows * rng.integers(100, 2000, n)
    return {
        "waiting": rng.integers(0, 50, n).astype(float),
        "logits": rows,
        "tokens": rows + prefill,
        "kv_tokens": ctx + rows + prefill,
        "attn_pairs": ctx + rows + prefill * prefill / 2,
        "score_pairs": prefill * prefill,
    }


TRUE = {"overhead_s": 0.01, "per_sampled_row_s": 2e-4, "per_token_s": 5e-5, "per_kv_token_s": 1e-7}


def test_fit_recovers_the_terms_that_made_the_steps():
    f = synthetic_steps()
    y = StepFit(TRUE).predict(f)
    model = StepFit.fit(f, y)
    assert set(model.meta["terms"]) == set(TRUE)  # the other terms do not lower the held-out error
    assert model.meta["mape"] < 1e-6 and model.meta["mape_heldout"] < 1e-6
    for term, value in TRUE.items():
        assert model.coefficients[term] == pytest.approx(value, rel=1e-6)


def test_noise_terms_are_left_out_and_chosen_terms_are_given_terms():
    f = synthetic_steps(seed=1)
    rng = np.random.default_rng(2)
    y = StepFit(TRUE).predict(f) * rng.lognormal(0, 0.05, len(f["tokens"]))
    model = StepFit.fit(f, y)
    assert "per_waiting_s" not in model.meta["terms"] and "per_score_pair_s" not in model.meta["terms"]
    forced = StepFit.fit(f, y, terms=["overhead_s", "per_token_s"])
    assert forced.meta["terms"] == ["overhead_s", "per_token_s"] and set(forced.coefficients) <= set(TRUE)
    # a term the steps never exercise was printed among the fitted terms with a coefficient of 0
    quiet = {**f, "waiting": np.zeros_like(f["waiting"])}
    with pytest.raises(SeerInputError, match="term per_waiting_s has nothing to fit"):
        StepFit.fit(quiet, y, terms=["overhead_s", "per_waiting_s"])


def test_the_model_file_round_trips(tmp_path):
    f = synthetic_steps()
    model = StepFit.fit(f, StepFit(TRUE).predict(f))
    path = tmp_path / "m.toml"
    path.write_text(model.to_toml())
    back = StepFit.load(str(path))
    assert np.allclose(back.predict(f), model.predict(f), rtol=1e-12)
    assert back.meta["terms"] == model.meta["terms"]


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "cannot read"),
        ("not = [toml", "not a TOML step model"),
        ("[other]\nx = 1\n", r"no \[coefficients\]"),
        ("[coefficients]\noverhead_s = -1.0\n", ">= 0"),
        ("[coefficients]\nper_token_s = 1.0\n", "overhead_s must be > 0"),
        ("[coefficients]\nper_tokn_s = 1.0\n", "unknown terms"),
        ('[coefficients]\noverhead_s = "1"\n', "must be a number"),
    ],
)
def test_a_bad_model_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "m.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SeerInputError, match=message) as err:
        StepFit.load(str(path))
    assert str(path) in str(err.value)


@settings(max_examples=60, deadline=None)
@given(
    overhead=st.floats(1e-6, 1e-2),
    coef=st.lists(st.floats(0, 1e-2), min_size=len(TERMS) - 1, max_size=len(TERMS) - 1),
    batch=st.integers(1, 256),
    ctx=st.integers(0, 10**6),
    steps=st.integers(1, 50),
    waiting=st.integers(0, 100),
)
def test_closed_form_decode_spans_equal_the_steps_they_sum(overhead, coef, batch, ctx, steps, waiting):
    """The simulator's decode epochs (alpha(B) + beta·S, summed in closed form) price each step exactly as
    `step_time_sums` prices a decode step of the same rows."""
    m = StepFit(dict(zip(TERMS, [overhead, *coef])))
    total = 0.0
    for i in range(steps):
        s = ctx + i * batch
        total += m.step_time_sums(batch, s + batch, s + batch, 0.0, batch, waiting)
    assert m.decode_span(batch, ctx, steps, waiting) == pytest.approx(total, rel=1e-9, abs=1e-12)
    span = m.decode_span(batch, ctx, steps, waiting)
    assert m.steps_within(batch, ctx, span, waiting) >= steps


def test_simulate_and_compare_take_a_calibrated_model(tmp_path):
    model = tmp_path / "m.toml"
    model.write_text(StepFit(TRUE).to_toml())
    res = run_seer(
        "simulate", "--trace", BUNDLED, "--cluster", "qwen2-vl-72b", "--instances", "2", "--cost-model", str(model),
        "--out", str(tmp_path / "sim"), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    saved = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert saved["config"]["cost_model"]["coefficients"] == TRUE
    assert saved["config"]["cost_model"]["source"] == str(model)
    assert saved["summary"]["efficiency"] is None  # a fitted model has no roofline bound to measure against
    bad = run_seer(
        "compare", "--trace", BUNDLED, "--cluster", "qwen2-vl-72b", "--cost-model", str(tmp_path / "none.toml"),
        "--out", str(tmp_path / "cmp"),
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot read the step model" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "cmp").exists()
    bad = run_seer("calibrate", str(tmp_path), "-o", str(tmp_path / "x.toml"))
    assert bad.returncode == 2 and "not a recorded run" in bad.stderr and not (tmp_path / "x.toml").exists()


def test_a_group_prompt_is_computed_once_per_instance_with_the_prefix_cache():
    """Two samples of one prompt on one instance: the second starts with the prompt's full blocks computed
    (vLLM's prefix cache), in the same step; without the cache both compute the whole prompt."""
    from seer.sim.batch import InstanceStats, Running, Seq
    from seer.sim.config import InstanceConfig
    from seer.sim.kv import KVMemory
    from seer.sim.step_scheduler import StepScheduler

    for cache in (True, False):
        cfg = InstanceConfig(256, 4, 8, 64, cache)
        sched = StepScheduler(0, cfg, KVMemory(64, 4, cache), Running(), [], InstanceStats(), lambda s: None)
        for rid in (0, 1):
            sched.enqueue(Seq(rid, 0, rid, 10, 5, True, None, 5, group=7, prompt_len=10))
        _idx, n = sched.schedule()
        assert n.tolist() == ([10, 2] if cache else [10, 10])  # (10 - 1) // 4 full blocks = 8 tokens shared
        assert sched.stats.prefix_hit_tokens == (8 if cache else 0)


RECORDED = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "fidelity" / "longtail-context-4i"


def test_calibrate_and_fidelity_on_a_committed_recording(tmp_path):
    """A recorded vLLM run (kept small in benchmarks/data): the calibrated model predicts its own steps and the
    re-simulated makespan within the issue's self-fit bounds' order of magnitude, and the report is complete."""
    res = run_seer("calibrate", str(RECORDED), "-o", str(tmp_path / "m.toml"), "--json")
    assert res.returncode == 0, res.stderr
    fid = run_seer("fidelity", str(RECORDED), "--cost-model", str(tmp_path / "m.toml"), "--json")
    assert fid.returncode == 0, fid.stderr
    f = json.loads(fid.stdout)
    assert abs(f["makespan_error"]) < 0.25 and f["step_time_mape"] < 0.5
    assert f["real_preemptions"] >= 0 and f["sim_preemptions"] >= 0
    # the model carries its calibration's decode speeds: against its own run the machine speed is the same
    assert f["speed_ratio"] == pytest.approx(1.0) and f["speed_steps"] > 100
    text = run_seer("fidelity", str(RECORDED), "--cost-model", str(tmp_path / "m.toml"))
    assert "machine speed     identical decode steps took the same time as in the calibration runs" in text.stdout
    assert "prefill work      real 21,461 tokens" in text.stdout


@pytest.mark.parametrize("name", ["gsm8k-context-3i", "kv-verl-2i"])
def test_the_simulated_prefix_cache_saves_the_prefill_vllm_saved(name):
    """vLLM's recorded prefill work after its prefix-cache hits, against the simulator's on the same trace:
    siblings whose group prompt is cached (context) and preempted requests that resume (kv-verl). Before the
    cache kept a group's prompt on its own, hit in whole blocks and evicted from the tail, the simulator computed
    7.5% and 15.1% more."""
    from seer.fidelity import fidelity

    f = fidelity(str(RECORDED.parent / name), progress=False)
    assert f["real_prefill_tokens"] > 5000 and abs(f["prefill_error"]) < 0.03, f["prefill_error"]


def test_speed_ratio_compares_identical_steps_only():
    import pandas as pd

    from seer.fidelity import decode_medians, speed_ratio

    def steps(batches, seconds, prompt=0):
        return pd.DataFrame(
            {"running": batches, "duration_s": seconds, "prompt_tokens": prompt, "generation_tokens": batches}
        )

    a = steps([1] * 30 + [4] * 30, [0.1] * 30 + [0.2] * 30)
    b = steps([1] * 30 + [4] * 50 + [9] * 40, [0.11] * 30 + [0.24] * 50 + [5.0] * 40)
    ratio, n = speed_ratio(decode_medians(a), decode_medians(b))
    assert n == 60 and ratio == pytest.approx((1.1 * 1.2) ** 0.5)  # batch 9 is b's alone: not compared
    prefill = steps([4] * 30, [9.0] * 30, prompt=100)  # not decode-only: never compared
    assert speed_ratio(decode_medians(a), decode_medians(prefill)) == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_fidelity_refuses_a_run_whose_settings_make_no_cluster(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RECORDED, run)
    doc = json.loads((run / "summary.json").read_text())
    doc["summary"]["kv_capacity_tokens"] = 3
    (run / "summary.json").write_text(json.dumps(doc))
    res = run_seer("fidelity", str(run))
    assert res.returncode == 2 and "no cluster the simulator can run" in res.stderr and res.stderr.count("\n") == 1
