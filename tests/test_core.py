import ast
from pathlib import Path

from seer.core import (
    ChunkFinished, ClusterView, Dispatch, Engine, FinishReason, Group, InstanceView, Policy, RequestState, Rollout,
)


def test_rollout_creates_g_requests_with_group_fields():
    ro = Rollout()
    made = ro.add_group(Group(group_id=7, prompt_len=100, max_tokens=50, size=4))
    made += ro.add_group(Group(group_id=9, prompt_len=10, max_tokens=5, size=2))
    assert [r.request_id for r in made] == list(range(6))
    assert [r.sample_index for r in ro.group_requests(7)] == [0, 1, 2, 3]
    r = ro.requests[0]
    assert (r.state, r.context_len, r.remaining_budget) == (RequestState.WAITING, 100, 50)
    r.generated = 20
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

        def submit(self, chunk, request): ...
        def abort(self, request_id): ...
        def view(self): ...
        def set_speculation(self, budgets): ...

    assert isinstance(Fake(), Engine)
    assert not isinstance(object(), Engine)


def test_core_imports_nothing_else_from_seer():
    core = Path(__file__).resolve().parents[1] / "seer" / "core"
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seer"):
                assert node.module.startswith("seer.core"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("seer") or alias.name.startswith("seer.core"), path.name
