"""Real engines as Ray actors: one process per engine, stepping at once on the wall clock, placed over the nodes
of a cluster, and killed for real.

Like test_real_backend.py these build vLLM engines (CPU) and fail without vLLM or Ray; `make test` installs both.
Each test starts its own engines, so a killed actor never leaks into the next test.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from conftest import run_seer
from test_real_backend import long_tail_trace, run_real

from seer.policies import make_policy


@pytest.fixture(scope="module", autouse=True)
def ray_down_after_module():
    """Leave no Ray running for the test modules after this one (they start their own)."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def local_ray():
    """A local Ray with two cores, shared by the tests that use it (the cluster test makes its own)."""
    from seer.real.launch import ensure_ray

    ensure_ray(2)


@pytest.fixture(scope="module")
def smollm2_dummy():
    from seer.real.models import prepare_model

    return str(prepare_model("dummy:smollm2"))


def test_two_actors_step_at_the_same_time(local_ray, smollm2_dummy):
    """Two actors with one core each, wall clock: every sample once with its recorded length, and the wall
    makespan well below the sum of the two engines' busy times (they ran in parallel)."""
    trace = long_tail_trace(groups=4, G=4, seed=11)
    driver, res, true_len = run_real(trace, make_policy("verl"), smollm2_dummy, launch="ray", clock="wall", cpus=1)
    assert driver.completions.tolist() == [1] * len(trace)
    assert res.requests["output_len"].tolist() == [true_len[r] for r in res.requests["request_id"]]
    steps = driver.steps_frame()
    busy = steps.groupby("instance")["duration_s"].sum()
    assert len(busy) == 2 and busy.min() > 0.3 * busy.max()  # both engines did a real share of the work
    assert res.summary["makespan_s"] < 0.8 * busy.sum()
    assert res.summary["launch"] == "ray" and res.summary["clock"] == "wall"
    pids = {inst.pid for inst in driver.instances}
    assert len(pids) == 2 and os.getpid() not in pids  # each engine in its own process


def test_one_instance_per_node_of_a_two_node_cluster(tiny_model):
    """A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`, one core per node): the placement
    group spreads the two instances, one per node, and the rollout completes."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        trace = long_tail_trace(groups=3, G=4, seed=2)
        driver, res, true_len = run_real(
            trace, make_policy("context", shared={"chunk_size": 64}), tiny_model, launch="ray"
        )
        nodes = [inst.node for inst in driver.instances]
        assert len(set(nodes)) == 2 and set(nodes) <= {n["NodeID"] for n in ray.nodes()}
        assert sorted(res.summary["engine_nodes"]) == sorted(nodes)
        assert driver.completions.tolist() == [1] * len(trace)
        assert res.requests["output_len"].tolist() == [true_len[r] for r in res.requests["request_id"]]
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def tiny_model():
    from seer.real.models import prepare_model

    return str(prepare_model("dummy:tiny"))


@pytest.mark.parametrize("policy", ["verl", "context"])
def test_kill_an_engine_process_mid_rollout(policy, tmp_path, local_ray):
    """`seer run --launch ray --kill 1@T` SIGKILLs engine 1's process: the driver notices, and the policy
    continues its requests on engine 0 from the tokens the driver holds. Nothing lost or twice, exact lengths."""
    trace = long_tail_trace(groups=6, G=4, seed=7)
    path = tmp_path / "lt.parquet"
    trace.to_parquet(path)
    out = tmp_path / "run"
    res = run_seer(
        "run",
        *("--model", "dummy:tiny", "--replay", str(path), "--policy", policy),
        *(("--chunk-size", "32") if policy != "verl" else ()),
        *("--launch", "ray", "--clock", "wall", "--kill", "1@0.3", "--max-model-len", "512"),
        *("--max-num-seqs", "8", "--out", str(out), "--json"),
        env={"RAY_ADDRESS": ray_address()},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["failed_instances"] == [1]
    rec = pd.read_parquet(out / "trace.parquet")
    merged = rec.merge(trace, on=["prompt_id", "sample_id"], suffixes=("", "_true"))
    assert len(merged) == len(trace) and (merged["output_len"] == merged["output_len_true"]).all()
    assert [len(x) for x in rec["output_ids"]] == rec["output_len"].tolist()
    steps = pd.read_parquet(out / "steps.parquet")
    last = steps[steps.instance == 1].iloc[-1]
    died = last["t"] + last["duration_s"]
    assert died < summary["makespan_s"]  # engine 1 stepped before it died; engine 0 finished the work
    reqs = pd.read_parquet(out / "requests.parquet")
    assert (reqs["migrations"] > 0).any()  # what engine 1 held was continued on engine 0
    # a request finishing in engine 1's last step is stamped when the driver handles that step, a Ray round trip
    # after the step's end (`died`); every later finish is engine 0's
    late = reqs["finish_s"] > died + 0.25
    assert late.any() and (reqs.loc[late, "instance"] == 0).all()


def ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def test_forced_preemption_run_is_recorded_per_request_and_step(tmp_path):
    """A KV cache of 9 blocks (one sequence of the model's length, and vLLM's null block) makes vLLM preempt: the
    run records each preemption per request (requests.parquet) and per step (steps.parquet), the counts agree, and
    every sample completes once."""
    trace = long_tail_trace(groups=2, G=4, seed=4)
    trace["prompt_len"] = 24
    trace["output_len"] = trace["output_len"].clip(60, 120)
    path = tmp_path / "lt.parquet"
    trace.to_parquet(path)
    out = tmp_path / "run"
    res = run_seer(
        "run",
        *("--model", "dummy:tiny", "--replay", str(path), "--policy", "verl", "--instances", "1"),
        *("--kv-blocks", "9", "--max-model-len", "256", "--max-num-seqs", "8", "--out", str(out), "--json"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    reqs = pd.read_parquet(out / "requests.parquet")
    steps = pd.read_parquet(out / "steps.parquet")
    assert summary["preemptions"] > 0 and summary["kv_capacity_tokens"] == 8 * 32  # 9, less vLLM's null block
    assert reqs["preemptions"].sum() == summary["preemptions"] == steps["preempted"].sum()
    rec = pd.read_parquet(out / "trace.parquet")
    merged = rec.merge(trace, on=["prompt_id", "sample_id"], suffixes=("", "_true"))
    assert len(merged) == len(trace) and (merged["output_len"] == merged["output_len_true"]).all()
