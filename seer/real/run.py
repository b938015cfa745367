"""`seer run`: one rollout on real vLLM engines, recorded as a trace plus the usual RolloutResult."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from seer.core import Group, Rollout
from seer.errors import SeerInputError
from seer.fileio import atomic_dir, check_output_dir, input_problem, json_safe
from seer.real.checks import check_kv_blocks, check_kv_memory, check_replayable, model_config, model_vocab
from seer.real.models import check_model, is_dummy, prepare_model
from seer.traces.rollout import check_output_cap, rollout_from_trace

PROMPT_FIELDS = ("question", "prompt", "text", "problem")
DEFAULT_SPEC_TOKENS = 4


@dataclass
class RunSpec:
    model: str = "smollm2"
    prompts: str | None = None  # JSONL of prompts
    replay: str | None = None  # trace to replay lengths of
    group: int | None = 8  # samples per prompt with --prompts (None for a replay, which has its own)
    limit: int | None = None  # first N prompts
    instances: int = 2
    policy: str = "context"
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    clock: str = "virtual"
    max_num_seqs: int = 64
    max_model_len: int = 2048
    speculation: str = "auto"  # auto (group when the policy drafts, else none) | none | ngram | group
    spec_tokens: int | None = None  # draft depth of ngram | group (None: DEFAULT_SPEC_TOKENS); refused otherwise
    seed: int = 0
    chunk_size: int | None = None
    fail: tuple[int, float] | None = None
    kill: tuple[int, float] | None = None  # SIGKILL an engine's process (launch ray)
    launch: str = "inproc"  # inproc | ray
    cpus_per_instance: int = 1
    gpus_per_instance: int = 0
    kv_blocks: int | None = None


def read_prompts(path: str, limit: int | None) -> list[tuple[int, str]]:
    """(line, prompt text) from a JSONL file (first of the fields question / prompt / text / problem)."""
    problem = input_problem(path, "prompt file")
    if problem:
        raise SeerInputError(f"{path}: {problem}")
    try:
        with open(path, "rb") as fh:  # decoded line by line: a bad byte is named by its line, past --limit unread
            texts = _prompt_texts(path, fh, limit)
    except OSError as exc:
        raise SeerInputError(f"{path}: cannot read the prompt file ({exc.strerror or exc})") from None
    if not texts:
        raise SeerInputError(f"{path}: no prompts")
    return texts


def _prompt_texts(path: str, lines, limit: int | None) -> list[tuple[int, str]]:
    texts = []
    for n, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SeerInputError(f"{path}, line {n}: not UTF-8 text ({exc.reason})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SeerInputError(f"{path}, line {n}: not JSON ({exc.msg})")
        text = next((row[f] for f in PROMPT_FIELDS if isinstance(row, dict) and isinstance(row.get(f), str)), None)
        if text is None:
            raise SeerInputError(f"{path}, line {n}: no string field among {', '.join(PROMPT_FIELDS)}")
        try:  # a JSON escape can make a lone surrogate, which no tokenizer encodes
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SeerInputError(
                f"{path}, line {n}: the prompt holds {exc.object[exc.start]!r}, a lone surrogate"
            ) from None
        texts.append((n, text))
        if limit and len(texts) >= limit:
            break
    return texts


def chat_prompt_ids(model_dir, texts: list[str]) -> tuple[list[list[int]], int]:
    """Token ids of each text as a user turn under the model's chat template, and the EOS id."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:  # no tokenizer files, or ones transformers cannot read
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SeerInputError(f"{model_dir}: no usable tokenizer for --prompts ({first})") from None
    if tok.eos_token_id is None or getattr(tok, "chat_template", None) is None:
        raise SeerInputError(f"{model_dir}: --prompts needs a tokenizer with an EOS token and a chat template")
    ids = []
    for t in texts:
        text = tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
        ids.append(tok.encode(text, add_special_tokens=False))
    return ids, int(tok.eos_token_id)


def build_workload(spec: RunSpec, model_dir, vocab: int, source):
    """(rollout, prompts by group, replay lengths or None, stop ids). `source`: the loaded trace (replay) or
    the (line, prompt text) pairs (real generation), read before the model is prepared so bad input fails fast."""
    if spec.replay:
        trace = source
        if spec.limit:
            # the first N prompt ids sorted as text (10 before 2): the recorded runs in benchmarks/data were chosen so
            keep = sorted(trace["prompt_id"].unique(), key=str)[: spec.limit]
            trace = trace[trace["prompt_id"].isin(set(keep))]
        check_output_cap(trace, spec.max_tokens, spec.replay, "--max-tokens")
        check_replayable(trace, spec)
        ro, true_len = rollout_from_trace(trace, spec.max_tokens)
        rng = np.random.default_rng(spec.seed)
        prompts = {}
        for gid in ro.groups:
            # vLLM refuses an empty prompt (a prompt past the context was refused by `check_replayable`, before a
            # prompt_len of 1e15 could ask for petabytes here)
            lens = [ro.requests[r].prompt_len for r in ro.members[gid]]
            if min(lens) < 1:
                pid = ro.requests[ro.members[gid][0]].key[0]
                raise SeerInputError(f"{spec.replay}: prompt {pid!r}: an empty prompt (vLLM refuses it)")
            # the group's longest prompt: each sample takes its own length of it (`driver.prompt_ids`)
            prompts[gid] = rng.integers(3, vocab, size=max(lens)).tolist()
        return ro, prompts, true_len, ()
    ids, eos = chat_prompt_ids(model_dir, [text for _line, text in source])
    ro, prompts = Rollout(), {}
    for gid, p in enumerate(ids):
        if len(p) + spec.max_tokens > spec.max_model_len:
            raise SeerInputError(
                f"{spec.prompts}, line {source[gid][0]}: the prompt's {len(p):,} tokens under the chat template plus "
                f"--max-tokens {spec.max_tokens:,} exceed --max-model-len {spec.max_model_len:,}"
            )
        ro.add_group(Group(gid, len(p), spec.max_tokens, spec.group, prompt_ids=tuple(p)))
        prompts[gid] = p
    return ro, prompts, None, (eos,)


def read_source(spec: RunSpec):
    if bool(spec.prompts) == bool(spec.replay):
        raise SeerInputError("give exactly one of --prompts FILE (real generation) or --replay TRACE (length replay)")
    if spec.replay:
        from seer.traces.io import load_trace

        return load_trace(spec.replay)
    if is_dummy(spec.model):
        raise SeerInputError(f"--prompts needs a model with a tokenizer (smollm2), not {spec.model}")
    return read_prompts(spec.prompts, spec.limit)


def speculation_settings(spec: RunSpec, traits) -> tuple[str, dict | None, object]:
    """(method, vLLM speculative_config or None, the run's GroupDrafter or None). "auto" drafts with the
    project's group drafter when the policy declares a drafter (its configuration and draft cap), else not at
    all."""
    from seer.core import DraftConfig
    from seer.policies.speculation import GroupDrafter

    method = spec.speculation
    if spec.spec_tokens is not None and method in ("auto", "none"):  # it would be dropped, the engines started
        why = (
            "drafts only for a policy with a drafter, as deep as its own cap" if method == "auto" else "drafts nothing"
        )
        raise SeerInputError(f"--spec-tokens sets the draft depth of --speculation ngram or group; {method} {why}")
    if method == "auto":
        method = "group" if traits.drafter is not None else "none"
    if method == "none":
        return method, None, None
    tokens = max(1, traits.max_draft_tokens) if spec.speculation == "auto" else spec.spec_tokens or DEFAULT_SPEC_TOKENS
    if method == "ngram":
        return (
            method,
            {"method": "ngram", "num_speculative_tokens": tokens, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
            None,
        )
    if method == "group":
        if spec.launch != "inproc":
            why = "policy's drafter" if spec.speculation == "auto" else "group drafter"
            raise SeerInputError(
                f"the {why} shares the driver's process: it needs --launch inproc "
                "(with --launch ray use --speculation ngram or none)"
            )
        return (
            method,
            {"method": "custom_class", "num_speculative_tokens": tokens},
            GroupDrafter(traits.drafter or DraftConfig()),
        )
    raise SeerInputError("--speculation must be auto, none, ngram or group")


def _save(driver, result, spec: RunSpec, method: str, out: str) -> None:
    """The usual results plus trace.parquet, steps.parquet and run.json."""
    result.summary.update(
        {
            "workload": spec.replay or spec.prompts,
            "group": spec.group if spec.prompts else None,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "speculation_method": method,
        }
    )
    result.config["run"] = json_safe(vars(spec))
    with atomic_dir(out, recording=True) as tmp:  # replaced whole: never a mix of two runs
        result.write_into(tmp)
        driver.recorded_trace().to_parquet(tmp / "trace.parquet", index=False)
        driver.steps_frame().to_parquet(tmp / "steps.parquet", index=False)
        (tmp / "run.json").write_text(json.dumps(json_safe(vars(spec)), indent=2))


def _check_inputs(spec: RunSpec, out: str) -> None:
    """What can be refused before any engine starts: the model, the KV size, the output folder."""
    from seer.real.engine import EngineSettings

    check_model(spec.model)
    check_kv_blocks(spec)
    # the command line checks --group; from Python a RunSpec of prompts may carry none
    if spec.prompts and not spec.replay and not (type(spec.group) is int and spec.group >= 1):
        raise SeerInputError(f"group: samples per prompt must be an integer >= 1 with prompts, not {spec.group!r}")
    batched = max(EngineSettings.max_num_batched_tokens, spec.max_model_len)  # as `EngineSettings.engine_args`
    if spec.max_num_seqs > batched:  # vLLM refuses it when the engine is built
        raise SeerInputError(
            f"--max-num-seqs {spec.max_num_seqs:,}: vLLM schedules at most {batched:,} sequences per step (the larger "
            f"of {EngineSettings.max_num_batched_tokens:,} and --max-model-len)"
        )
    check_output_dir(out, recording=True)  # before the rollout, not after it


def _prepared_model(spec: RunSpec):
    """The model's folder, prepared, and its vocabulary size, with what the model decides checked (KV memory)."""
    model_dir = prepare_model(spec.model)
    cfg = model_config(model_dir)
    vocab = model_vocab(cfg, f"{model_dir}/config.json")
    check_kv_memory(spec, cfg)
    return model_dir, vocab


def run_rollout(spec: RunSpec, out: str, progress: bool | None = None) -> dict:
    """One real rollout as `seer run` describes it; returns its summary (results written under `out`)."""
    from seer.core import traits_of
    from seer.policies import make_policy
    from seer.real.drafter import proposer_for
    from seer.real.driver import RealDriver
    from seer.real.engine import EngineSettings

    _check_inputs(spec, out)
    policy = make_policy(spec.policy, shared={"chunk_size": spec.chunk_size})
    traits = traits_of(policy)
    method, speculative, drafter = speculation_settings(spec, traits)
    source = read_source(spec)
    if traits.needs_oracle and not spec.replay:
        raise SeerInputError(f"policy {policy.name} needs true output lengths: run it on --replay TRACE")
    model_dir, vocab = _prepared_model(spec)
    ro, prompts, replay, stop = build_workload(spec, model_dir, vocab, source)
    proposers = None
    if drafter is not None:
        speculative["model"], proposers = proposer_for(drafter)
    settings = EngineSettings(
        str(model_dir),
        dummy=is_dummy(spec.model),
        max_num_seqs=spec.max_num_seqs,
        max_model_len=spec.max_model_len,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=spec.seed,
        stop_token_ids=stop,
        speculative=speculative,
        kv_blocks=spec.kv_blocks,
        tensor_parallel=max(1, spec.gpus_per_instance),
        gpu=spec.gpus_per_instance > 0,
    )
    driver = RealDriver(
        ro,
        prompts,
        settings,
        policy,
        instances=spec.instances,
        clock=spec.clock,
        replay_len=replay,
        progress=progress,
        fail=spec.fail,
        drafter=drafter,
        proposers=proposers,
        launch=spec.launch,
        kill=spec.kill,
        cpus=spec.cpus_per_instance,
        gpus=spec.gpus_per_instance,
    )
    try:
        result = driver.run()
    finally:
        driver.shutdown()
    if (driver.completions > 1).any():
        raise RuntimeError("a sample completed more than once")
    _faults_that_came_late(driver)
    _save(driver, result, spec, method, out)
    return result.summary


def _faults_that_came_late(driver) -> None:
    """A --fail or --kill the driver never applied (timed after the last step) changed nothing: said, not left to
    the reader to notice."""
    import warnings

    for when, instance, kill in driver.faults:
        warnings.warn(
            f"{'--kill' if kill else '--fail'} {instance}@{when:g}: the rollout's last step began before it; the "
            "fault was never applied",
            stacklevel=3,
        )
