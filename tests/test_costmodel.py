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


def _profiles(shared_data):
    cal = shared_data.parent / "calibration"
    return pd.concat([pd.read_csv(cal / "h100_step_profile.csv"), pd.read_csv(cal / "h100_moonlight_profile.csv")])


def test_committed_coefficients_are_the_fit_of_the_profiles(shared_data):
    fits = fit_profile(_profiles(shared_data))
    for family, coef in fits.items():
        committed = fitted_coefficients(family)
        for key in COEF_KEYS:
            assert getattr(committed, key) == pytest.approx(getattr(coef, key), rel=1e-6, abs=1e-12), (family, key)


def test_decode_mape_within_ten_percent(shared_data):
    df = _profiles(shared_data)
    err = fit_errors(df, fit_profile(df))
    assert err[err.kind == "decode"].ape.mean() <= 0.10
    assert err[err.kind == "verify"].ape.mean() <= 0.15
