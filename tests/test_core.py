import ast
from pathlib import Path

from seer.core import (
    ChunkFinished,
    ClusterView,
    Dispatch,
    Engine,
    FinishReason,
    Group,
    InstanceView,
    Policy,
    RequestState,
    Rollout,
)
from seer.core.model import write_request


def test_rollout_creates_g_requests_with_group_fields():
    ro = Rollout()
    made = ro.add_group(Group(group_id=7, prompt_len=100, max_tokens=50, size=4))
    made += ro.add_group(Group(group_id=9, prompt_len=10, max_tokens=5, size=2))
    assert [r.request_id for r in made] == list(range(6))
    assert [r.sample_index for r in ro.group_requests(7)] == [0, 1, 2, 3]
    r = ro.requests[0]
    assert (r.state, r.context_len, r.remaining_budget) == (RequestState.WAITING, 100, 50)
    write_request(r, generated=20)
    assert (r.context_len, r.remaining_budget) == (120, 30)


def test_duplicate_group_is_refused():
    ro = Rollout()
    ro.add_group(Group(1, 10, 10, 2))
    try:
        ro.add_group(Group(1, 10, 10, 2))
    except ValueError as exc:
        assert "already" in str(exc)
    else:
        raise AssertionError("duplicate group accepted")


def test_instance_view_free_kv_counts_reservations():
    v = InstanceView(0, kv_capacity_tokens=1000, kv_used_tokens=300, kv_reserved_tokens=700, running=2, waiting=1)
    assert v.kv_free_tokens == 300 and v.in_flight == 3


class FirstFit:
    """A tiny policy written against the contract only: dispatch every waiting request to instance 0."""

    name = "first-fit"

    def on_event(self, event, view: ClusterView):
        return [Dispatch(r.request_id, 0, r.remaining_budget) for r in view.waiting_requests()]


def test_a_policy_written_against_the_contract_satisfies_the_protocol():
    ro = Rollout()
    ro.add_group(Group(0, 10, 8, 3))
    view = ClusterView(t=0.0, instances=[InstanceView(0, 100, 0, 0, 0, 0)], groups=ro.groups, requests=ro.requests)
    pol = FirstFit()
    assert isinstance(pol, Policy)
    ev = ChunkFinished(t=1.0, request_id=0, instance=0, new_tokens=8, finished=True, reason=FinishReason.LENGTH)
    acts = pol.on_event(ev, view)
    assert [a.request_id for a in acts] == [0, 1, 2] and all(a.max_new_tokens == 8 for a in acts)


def test_engine_protocol_is_structural():
    class Fake:
        instance_id = 0
        alive = True

        def submit(self, chunk, request): ...
        def abort(self, request_id): ...
        def view(self): ...
        def set_speculation(self, budgets): ...

    assert isinstance(Fake(), Engine)
    assert not isinstance(object(), Engine)


SEER = Path(__file__).resolve().parents[1] / "seer"
# layer -> the seer modules it may import (prefixes); the design's direction is
# core <- policies <- loop <- sim, real <- experiment, fidelity <- cli
ALLOWED = {
    "core": ("seer.core",),
    # seer.schema is a leaf (it imports nothing of seer): the bound on integers typed inputs may hold
    "policies": ("seer.core", "seer.errors", "seer.schema", "seer.policies"),
    "loop": ("seer.core", "seer.errors", "seer.metrics", "seer.fileio", "seer.progress", "seer.loop"),
    "traces": (
        "seer.core",
        "seer.errors",
        "seer.fileio",
        "seer.presets",
        "seer.progress",
        "seer.schema",
        "seer.traces",
    ),
}
FORBIDDEN = {
    "sim": ("seer.real", "seer.cli", "seer.experiment", "seer.fidelity", "seer.figures", "seer.sweep"),
    "real": ("seer.sim", "seer.cli", "seer.experiment", "seer.fidelity", "seer.figures", "seer.sweep"),
    "experiment": ("seer.cli", "seer.figures", "seer.sweep"),
    "presets": ("seer.core", "seer.policies", "seer.sim", "seer.real", "seer.traces", "seer.cli"),
}


def _layer(path: Path) -> str:
    rel = path.relative_to(SEER).with_suffix("")
    return rel.parts[0]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return [m for m in out if m == "seer" or m.startswith("seer.")]


def test_every_layering_rule_holds():
    broken = []
    for path in sorted(SEER.rglob("*.py")):
        layer = _layer(path)
        for mod in _imports(path):
            if layer in ALLOWED and not mod.startswith(ALLOWED[layer]):
                broken.append(f"{path.relative_to(SEER)} imports {mod}")
            if mod.startswith(FORBIDDEN.get(layer, ("-",))):
                broken.append(f"{path.relative_to(SEER)} imports {mod}")
            if mod.startswith("seer.cli") and layer not in ("cli", "__main__"):
                broken.append(f"{path.relative_to(SEER)} imports the command line ({mod})")
    assert not broken, broken


def test_the_layering_check_can_fail(tmp_path):
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from seer.sim.driver import simulate\n")
    assert _imports(fake) == ["seer.sim.driver"]
    assert not "seer.sim.driver".startswith(ALLOWED["policies"])


def test_modules_and_functions_stay_small():
    """No module over 400 lines; no function over 60 lines, except the argument-parser tables (`register`)."""
    too_long = []
    for path in sorted(SEER.rglob("*.py")):
        src = path.read_text()
        if src.count("\n") > 400:
            too_long.append(f"{path.relative_to(SEER)}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef) and node.name != "register":
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    too_long.append(f"{path.relative_to(SEER)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, too_long
