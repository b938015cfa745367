"""`seer sweep CONFIG`: a grid of simulations (presets x policies x parameters x seeds) run on a local process
pool, or on a Ray cluster (`--ray`, or whenever RAY_ADDRESS is set). Each finished cell is stored on its own
(atomically), so a sweep that was interrupted and is run again only computes the cells still missing; the
results land in one Parquet table. A cell is stored under a hash of the cell, of its preset's contents (workload,
cluster, cost model) and of the code (seer's, and a policy of one's own), so an edited preset, policy or seer
computes it again rather than serving the old cell (`seer.sweep_store`).

CONFIG (TOML):

    [sweep]
    presets = ["qwen2-vl-72b"]
    policies = ["verl", "context", "seer"]
    seeds = [0, 1]
    prompts = 60                 # optional: prompts per workload (default: the preset's)
    [sweep.params]               # optional: a grid over policy parameters
    chunk_size = [4096, 8192]

Each policy is swept over the parameters it takes (above, `context` and `seer` over chunk_size, `verl` once). A
key no listed policy takes, a key [sweep] does not know, or a value of the wrong type is refused before any
cell runs, with one line naming it and listing the valid ones.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import tomllib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from seer.errors import SeerInputError
from seer.fileio import atomic_path, check_writable, input_problem, json_safe, remove_empty_folders, write_text_atomic
from seer.progress import progress_bar
from seer.schema import INT_LIMIT, show
from seer.sweep_store import (  # noqa: F401  (cell_key and the columns re-exported)
    LABEL_COLUMNS,
    SUMMARY_COLUMNS,
    cell_key,
    code_fingerprint,
    kept_cell,
    preset_fingerprint,
    typed,
)

SWEEP_KEYS = ("presets", "policies", "seeds", "prompts", "params")


def _read_toml(path: str) -> dict:
    problem = input_problem(path, "sweep config")
    if problem:
        raise SeerInputError(f"{path}: {problem}")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except IsADirectoryError:
        raise SeerInputError(f"{path}: is a folder, not a sweep config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SeerInputError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str) -> dict:
    """The [sweep] table, checked: known keys, types, presets and policies that exist, parameters some listed
    policy takes with values of its type."""
    from seer.presets import presets as known_presets
    from seer.traces.synth import preset_config

    doc = _read_toml(path)
    outside = sorted(set(doc) - {"sweep"})
    if outside:  # a [params] table or a prompts = 4 above [sweep] was dropped without a word
        raise SeerInputError(f"{path}: unknown top-level key(s) {', '.join(outside)}; put them under [sweep]")
    cfg = doc.get("sweep")
    if not isinstance(cfg, dict):
        raise SeerInputError(f"{path}: no [sweep] table")
    unknown = sorted(set(cfg) - set(SWEEP_KEYS))
    if unknown:
        raise SeerInputError(f"{path}: unknown [sweep] key(s) {', '.join(unknown)}; valid: {', '.join(SWEEP_KEYS)}")
    for key in ("presets", "policies"):
        if not isinstance(cfg.get(key), list) or not cfg[key] or not all(isinstance(v, str) for v in cfg[key]):
            raise SeerInputError(f"{path}: [sweep] needs a non-empty list of names '{key}'")
    seeds = cfg.setdefault("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(v) is int and 0 <= v <= INT_LIMIT for v in seeds):
        raise SeerInputError(f"{path}: [sweep] seeds must be a non-empty list of integers from 0 to 2**53")
    for key in ("presets", "policies", "seeds"):  # a repeated entry would run the same cells twice
        twice = sorted({str(v) for v in cfg[key] if cfg[key].count(v) > 1})
        if twice:
            raise SeerInputError(f"{path}: [sweep] {key} lists {', '.join(twice)} more than once")
    prompts = cfg.get("prompts")
    if prompts is not None and (type(prompts) is not int or prompts < 1):  # its size: each preset's check below
        raise SeerInputError(f"{path}: [sweep] prompts must be an integer >= 1, not {show(prompts)}")
    missing = [p for p in cfg["presets"] if p not in known_presets()]
    if missing:
        raise SeerInputError(f"{path}: unknown preset(s) {', '.join(missing)}; known: {', '.join(known_presets())}")
    for preset in cfg["presets"]:  # the workload each cell would draw, checked before any cell runs
        try:
            preset_config(preset, prompts=prompts)
        except SeerInputError as exc:
            raise SeerInputError(f"{path}: {exc}") from None
    params = cfg.setdefault("params", {})
    if not isinstance(params, dict):
        raise SeerInputError(f"{path}: [sweep.params] must be a table of KEY = [values]")
    try:
        _check_params(cfg, params)
        _check_cells(cfg)
    except SeerInputError as exc:
        raise SeerInputError(f"{path}: {exc}") from None
    return cfg


def _check_params(cfg: dict, params: dict) -> None:
    """Each swept key: taken by some listed policy, set in one place only, every value of its type and range and
    given once."""
    from seer.policies import parse_policy_spec, policy_config, policy_keys

    configs = [policy_config(spec) for spec in cfg["policies"]]
    names = [name for name, _ in configs]
    first = {}
    for spec, (name, config) in zip(cfg["policies"], configs):  # context and context:chunk_size=8192, say
        earlier = first.setdefault((name, repr(config)), spec)
        if earlier != spec:
            raise SeerInputError(f"policies {earlier!r} and {spec!r} are one configuration: their cells would repeat")
    valid = sorted({k for n in names for k in policy_keys(n)})
    for key, values in params.items():
        if not isinstance(values, list) or not values:
            raise SeerInputError(f"[sweep.params] {key} must be a non-empty list of values, not {values!r}")
        takers = [spec for spec, n in zip(cfg["policies"], names) if key in policy_keys(n)]
        if not takers:
            raise SeerInputError(f"[sweep.params] no listed policy takes {key!r}; valid: {', '.join(valid)}")
        for spec in takers:
            if key in parse_policy_spec(spec)[1]:  # the spec's own value would win, under the swept labels
                raise SeerInputError(
                    f"policy {spec!r} sets {key}, which [sweep.params] sweeps; set it in one place only"
                )
            for v in values:  # its type and range (as a swept value: read only where the cell's config reads it)
                policy_config(spec, {key: v})
        # a value given twice in two spellings ("4096" and 4096) would run one cell twice
        read = [getattr(policy_config(takers[0], {key: v})[1], key) for v in values]
        if len({repr(v) for v in read}) < len(values):
            raise SeerInputError(f"[sweep.params] {key} lists a value more than once: {values!r}")


def _check_cells(cfg: dict) -> None:
    """What only whole cells show: a swept key that no cell's configuration reads (gamma where every listed seer's
    speculation is adaptive, say: its cells would repeat under other labels), and a policy that cannot serve the
    preset's groups (partial's target_groups above them), before any cell runs."""
    from seer.experiment import check_groups
    from seer.policies import make_policy, policy_config
    from seer.traces.synth import preset_config

    grid = cells(cfg)
    read = {k for cell in grid for k in cell["params"]}
    for key, values in cfg.get("params", {}).items():
        if key not in read:
            spec = next(s for s in cfg["policies"] if key in policy_config(s)[1].keys())
            why = policy_config(spec, {key: values[0]})[1].ignored({key})[key]
            raise SeerInputError(f"[sweep.params] {key}: no cell reads it ({spec}: {why})")
    groups = {p: preset_config(p, prompts=cfg.get("prompts")).prompts for p in cfg["presets"]}  # a cell: one rollout
    for cell in grid:
        check_groups([make_policy(cell["policy"], **cell["params"])], groups[cell["preset"]])


def cells(cfg: dict) -> list[dict]:
    """Every (preset, policy, seed, params) combination, in a fixed order; each policy only over the parameters
    it takes."""
    from seer.policies import parse_policy_spec, policy_keys

    params = cfg.get("params", {}) or {}
    out = []
    for preset, spec in itertools.product(cfg["presets"], cfg["policies"]):
        takes = policy_keys(parse_policy_spec(spec)[0])
        keys = sorted(k for k in params if k in takes)
        grid = []
        for combo in itertools.product(*(params[k] for k in keys)):
            read = _read(spec, dict(zip(keys, combo)))
            if read not in grid:
                grid.append(read)
        for seed, p in itertools.product(cfg.get("seeds", [0]), grid):
            out.append(
                {"preset": preset, "policy": spec, "seed": int(seed), "prompts": cfg.get("prompts"), "params": p}
            )
    return out


def _read(spec: str, params: dict) -> dict:
    """The swept values a cell's configuration reads: one it ignores (gamma where speculation is adaptive) would
    only repeat a cell under another label, so it is left out of the cell."""
    from seer.policies import policy_config

    ignored = policy_config(spec, params)[1].ignored(set(params))
    return {k: v for k, v in params.items() if k not in ignored}


def run_cell(cell: dict) -> dict:
    """Simulate one cell; returns its row (cell description + summary metrics). Pure: same cell, same row."""
    from seer.experiment import Setup, run
    from seer.policies import make_policy

    try:
        setup = Setup.from_preset(cell["preset"], seed=cell["seed"], prompts=cell["prompts"])
        policy = make_policy(cell["policy"], **cell["params"])
        res = run(setup, policy)
    except SeerInputError as exc:  # as a plain one: a subclass with its own arguments may not unpickle here
        raise SeerInputError(str(exc)) from None
    row = {
        "preset": cell["preset"],
        "policy": cell["policy"],
        "seed": cell["seed"],
        # as the configuration read them ("8192" is 8192): one type per results column (the cell, and so its
        # stored name, keeps the values as the config file gives them)
        **{f"param_{k}": getattr(policy.cfg, k) for k in cell["params"]},
    }
    row.update({k: res.summary.get(k) for k in (*SUMMARY_COLUMNS, *LABEL_COLUMNS)})
    return row


def _die_with_parent() -> None:
    """Pool initializer: the worker is killed when its parent dies, even by SIGKILL (Linux; elsewhere a no-op), and
    by SIGTERM (a forked worker inherits the CLI's SIGTERM handler, which only raises: the pool would report that
    and run the next cell, and stopping a sweep terminates its workers)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _run_local(todo: list[dict], workers: int | None) -> Iterable[tuple[dict, dict]]:
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent)
    futures = [pool.submit(run_cell, cell) for cell in todo]
    try:
        for cell, future in zip(todo, futures):
            yield cell, future.result()
    except BaseException:
        # Ctrl-C or a failed cell: stop the running cells now and start no others (leaving the pool by `with`
        # waited for every submitted cell, then threw the results away). The pool, broken by the terminated
        # workers, fails the cells not yet run; a worker that died on its own is a BrokenProcessPool here.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False)
        raise
    pool.shutdown()


def _connect_ray() -> None:
    """Start Ray here, or join the cluster at RAY_ADDRESS: refused in one line where nothing answers there (Ray
    retries for minutes, and the sweep hung)."""
    try:
        import ray

        from seer.ray_init import init_ray
    except ImportError:
        raise SeerInputError("--ray needs Ray: pip install 'seer-rollout[ray]'") from None
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    host, _, port = (address or "").split("://")[-1].rpartition(":")
    if host and port.isdigit():  # "auto" and the like are Ray's to resolve
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise SeerInputError(
                f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc.strerror or exc}); unset it to run the "
                "cells on a local process pool"
            ) from None
    init_ray(address=address, include_dashboard=False, log_to_driver=False)


def _run_ray(todo: list[dict]) -> Iterable[tuple[dict, dict]]:
    import ray

    remote = ray.remote(run_cell)
    refs = {remote.remote(c): c for c in todo}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            yield refs[ref], ray.get(ref)


def _check_out(out: str) -> None:
    """Refuse, before any cell runs, an output path a sweep cannot resume in or write to."""
    if not str(out):  # os.path.join("", "cells") is a folder here
        raise SeerInputError("the output folder's path is empty (--out '')")
    check_writable(out)  # the nearest part of the path that exists is a folder that takes new entries
    others = sorted(set(os.listdir(out)) - {"cells", "sweep.parquet"}) if os.path.isdir(out) else []
    others = [name for name in others if not name.startswith(".")]  # an interrupted write's temporary file
    if others:  # a sweep resumes from its own folder; another folder's files are the user's
        raise SeerInputError(
            f"{out}: holds files that are not a sweep's ({', '.join(others[:3])}); name a new folder or an earlier "
            "sweep's"
        )


def run_sweep(
    config_path: str, out: str, use_ray: bool = False, workers: int | None = None, progress: bool | None = None
) -> pd.DataFrame:
    """Run the cells of the sweep CONFIG not already stored in `out` and write `out`/sweep.parquet; the table's
    `attrs["reused"]` counts the cells read back from an earlier run."""
    _check_out(out)
    use_ray = use_ray or bool(os.environ.get("RAY_ADDRESS"))
    if use_ray and workers is not None:  # it sized nothing: Ray places the cells
        raise SeerInputError("--workers sizes the local process pool; on Ray (--ray, or RAY_ADDRESS set) it has no use")
    cfg = load_config(config_path)
    grid = cells(cfg)
    store = os.path.join(out, "cells")
    prints = {p: preset_fingerprint(p) for p in cfg["presets"]}
    codes = {spec: code_fingerprint(spec) for spec in cfg["policies"]}
    keys = [cell_key(c, prints[c["preset"]], codes[c["policy"]]) for c in grid]
    done = {}
    for cell, key in zip(grid, keys):
        row = kept_cell(os.path.join(store, key + ".json"), cell)
        if row is not None:
            done[key] = row
    todo = [c for c, key in zip(grid, keys) if key not in done]
    if todo and use_ray:  # before the folder: a cluster that cannot be reached leaves nothing behind
        _connect_ray()
    created = [p for p in [Path(store), *Path(store).parents] if not p.exists()][::-1]
    try:
        os.makedirs(store, exist_ok=True)
    except OSError as exc:
        raise SeerInputError(f"{store}: cannot create the sweep's cell folder ({exc.strerror or exc})") from None
    bar = progress_bar(progress, total=len(grid), initial=len(grid) - len(todo), desc="sweep", unit="cell")
    try:
        if todo:
            # a pool starts all its workers at once: never more than there are cells (or, by default, cores)
            workers = min(workers or os.cpu_count() or 1, len(todo))
            for cell, row in _run_ray(todo) if use_ray else _run_local(todo, workers):
                key = cell_key(cell, prints[cell["preset"]], codes[cell["policy"]])
                write_text_atomic(os.path.join(store, key + ".json"), json.dumps(json_safe(row)))
                done[key] = row
                bar.update(1)
    except BaseException:
        remove_empty_folders(created)  # interrupted before its first cell: the folders it made go too
        raise
    finally:
        bar.close()
    table = typed([done[key] for key in keys])
    with atomic_path(os.path.join(out, "sweep.parquet")) as tmp:
        table.to_parquet(tmp, index=False)
    table.attrs["reused"] = len(grid) - len(todo)
    return table
