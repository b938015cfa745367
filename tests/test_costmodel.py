from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seer.sim.calibration import fit_errors, fit_profile
from seer.sim.cluster import load_cluster
from seer.sim.costmodel import COEF_KEYS, CostModel, fitted_coefficients
from seer.sim.shapes import Parallelism, model_shape


@pytest.fixture(scope="module")
def cm():
    return CostModel(model_shape("qwen2.5-7b"))


def test_decode_step_is_affine_in_the_context_sum(cm):
    ctx = np.array([100, 2000, 5000])
    assert cm.step_time(np.ones(3), ctx) == pytest.approx(cm.decode_time(3, ctx.sum()))
    assert cm.decode_time(3, 20000) - cm.decode_time(3, 10000) == pytest.approx(cm.beta * 10000)


def test_closed_form_span_equals_the_sum_of_steps(cm):
    B, S = 7, 12345.0
    steps = [cm.decode_time(B, S + k * B) for k in range(50)]
    assert cm.decode_span(B, S, 50) == pytest.approx(sum(steps), rel=1e-12)
    for t in (0.0, steps[0] * 0.5, sum(steps[:10]), sum(steps[:10]) + 1e-9, sum(steps)):
        n = cm.steps_within(B, S, t)
        assert cm.decode_span(B, S, n) <= t + 1e-12 < cm.decode_span(B, S, n + 1)


def test_costs_grow_with_batch_context_and_tokens(cm):
    assert cm.decode_time(64, 64 * 1024) > cm.decode_time(8, 8 * 1024) > cm.decode_time(1, 1024)
    assert cm.prefill_time(4096) > cm.prefill_time(1024) > 0
    moe = CostModel(model_shape("moonlight-16b-a3b"))
    # MoE: more tokens touch more experts, so verification is dearer than a decode step
    assert moe.step_time(np.full(1, 9), np.full(1, 1024)) > 1.5 * moe.step_time(np.ones(1), np.full(1, 1024))


def test_tensor_parallel_adds_collectives_and_divides_the_rest():
    shape = model_shape("qwen2-72b")
    tp1, tp8 = CostModel(shape, par=Parallelism(tp=1)), CostModel(shape, par=Parallelism(tp=8))
    assert tp8.comm_s(1) > 0 == tp1.comm_s(1)
    assert tp8.decode_time(64, 64 * 4096) < tp1.decode_time(64, 64 * 4096) / 4


def test_kv_capacity_arithmetic():
    c = load_cluster("moonlight")
    free = (80 * 0.9 - 4) * 1024**3 - c.weight_bytes_per_instance()
    assert c.kv_capacity() == (int(free // 31104) // 16) * 16
    assert load_cluster("qwen2-vl-72b").shape.kv_bytes_per_token == 80 * 8 * 128 * 2 * 2


def _profiles():
    cal = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "calibration"
    return pd.concat([pd.read_csv(cal / "h100_step_profile.csv"), pd.read_csv(cal / "h100_moonlight_profile.csv")])


def test_committed_coefficients_are_the_fit_of_the_profiles():
    fits = fit_profile(_profiles())
    for family, coef in fits.items():
        committed = fitted_coefficients(family)
        for key in COEF_KEYS:
            assert getattr(committed, key) == pytest.approx(getattr(coef, key), rel=1e-6, abs=1e-12), (family, key)


def test_decode_mape_within_ten_percent():
    df = _profiles()
    err = fit_errors(df, fit_profile(df))
    assert err[err.kind == "decode"].ape.mean() <= 0.10
    assert err[err.kind == "verify"].ape.mean() <= 0.15


def _step_time_sums_formula(cm, tokens, kv_tokens, attn_pairs, score_pairs, logits=None):
    """The step model as DESIGN.md writes it, through `weight_read_bytes` and `comm_s`."""
    c = cm.coef
    logits = tokens if logits is None else logits
    return (
        c.overhead_s
        + c.layer_overhead_s * cm.shape.layers
        + c.weights * cm.weight_read_bytes(tokens) / cm.bw
        + c.kv * kv_tokens * cm._kvb / cm.bw
        + c.linear * (tokens * cm._lin_per_token + logits * cm._logit_flops) / cm.peak
        + c.attention * attn_pairs * cm._apf / cm.peak
        + c.scores * score_pairs * cm._score_bytes / cm.bw
        + cm.comm_s(tokens)
    )


@pytest.mark.parametrize("cluster", ["moonlight", "qwen2-vl-72b", "kimi-k2"])
def test_inlined_step_sums_equal_the_formula_bit_for_bit(cluster):
    """`step_time_sums` is the formula compiled (`seer.sim.cost_kernels`); it must not move one bit, for scalars
    (the MBA profile, single steps) and arrays (speculative epochs, a compiled loop: each element equals the scalar
    formula, so a step costs the same priced alone or in an epoch), dense and MoE, with and without TP/EP."""
    from seer.sim.cost_kernels import PARAMS

    cms = [load_cluster(cluster).cost_model(), CostModel(model_shape("qwen2-72b"), par=Parallelism(tp=4))]
    rng = np.random.default_rng(7)
    for cm in cms:
        assert len(cm.price_params) == len(PARAMS)  # the kernel reads the constants by position
        for _ in range(300):
            tok = float(rng.integers(1, 70000))
            kv, attn, pairs = (float(x) for x in rng.uniform(0, 1e9, 3))
            logits = float(rng.integers(0, 4096)) if rng.random() < 0.5 else None
            assert cm.step_time_sums(tok, kv, attn, pairs, logits) == _step_time_sums_formula(
                cm, tok, kv, attn, pairs, logits
            )
        for logits in (None, rng.integers(0, 4096, 64).astype(np.float64)):
            arrays = [rng.integers(1, 70000, 64).astype(np.float64)] + [rng.uniform(0, 1e9, 64) for _ in range(3)]
            got = cm.step_time_sums(*arrays, logits)
            rows = zip(*(a.tolist() for a in arrays), logits.tolist() if logits is not None else [None] * 64)
            np.testing.assert_array_equal(got, [_step_time_sums_formula(cm, *row) for row in rows])
        # broadcasting, as numpy's form allowed: a scalar column beside array columns
        np.testing.assert_array_equal(
            cm.step_time_sums(np.array([3.0, 5.0]), 100.0, 50.0, 0.0),
            [cm.step_time_sums(q, 100.0, 50.0, 0.0) for q in (3.0, 5.0)],
        )


@pytest.mark.parametrize("cluster", ["moonlight", "qwen2-vl-72b", "kimi-k2"])
def test_batched_verify_profile_equals_one_call_per_q(cluster):
    """The MBA rule reads every draft budget's step at once (`StepProfile.times`); the simulator's compiled form
    gives the floats of one `profile(batch, q, ctx)` call per q, for the roofline model and for a plain function."""
    from seer.core import StepProfile
    from seer.sim.driver import CostProfile

    rng = np.random.default_rng(11)
    for cm in (load_cluster(cluster).cost_model(), CostModel(model_shape("qwen2-72b"), par=Parallelism(tp=4))):
        prof = CostProfile(cm)
        for _ in range(200):
            batch, ctx, q_max = int(rng.integers(1, 2048)), float(rng.uniform(0, 1e5)), int(rng.integers(1, 17))
            assert prof.times(batch, q_max, ctx) == [prof(batch, q, ctx) for q in range(1, q_max + 1)]
    plain = StepProfile.of(lambda b, q, c: b * q + c)
    assert plain.times(3, 4, 0.5) == [3.5, 6.5, 9.5, 12.5] and StepProfile.of(plain) is plain


def test_remembered_alpha_and_scalar_span_equal_the_array_forms(cm):
    """The simulator's scalar decode spans (a remembered alpha, Python floats) equal the vectorised form."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        B, S, n = int(rng.integers(1, 4096)), float(rng.integers(0, 10**9)), int(rng.integers(0, 5000))
        assert cm.decode_span(B, S, n) == float(cm.decode_span(B, S, np.array([n]))[0])
    # the remembered alpha is kept per (batch, waiting): a model whose step time grows with the queue sees it
    from seer.sim.stepfit import StepFit

    fit = StepFit({"overhead_s": 1e-3, "per_waiting_s": 1e-4, "per_sampled_row_s": 1e-5})
    spans = [fit.decode_span(4, 100.0, 10, waiting=w) for w in (0, 5, 0, 5)]
    assert spans[0] == spans[2] < spans[1] == spans[3]
    assert spans[1] == float(fit.decode_span(4, 100.0, np.array([10]), waiting=5)[0])
