from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from flannel_bot.errors import (
    ApprovalRefused,
    InvalidState,
    NotAllowed,
    ParameterError,
    TargetBusy,
    UnknownNode,
    UnknownRunbook,
)
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.policy import Policy, RunbookRule
from flannel_bot.runs.registry import Registry, load_runbook
from flannel_bot.store import SqliteStore
from tests.conftest import POLICY, who
from tests.fakes import FakeClock, FakeCluster

REF = "flannel.restart-pods"
PINNED = f"{REF}@1.1.0"  # engine mechanics on a fake cluster: the version without diagnose-verify


def deletes(cluster: FakeCluster) -> list[tuple[str, ...]]:
    return [c for c in cluster.calls if c[0] == "delete_pod"]


def kinds(store: SqliteStore, run_id: int) -> list[str]:
    return [e.kind for e in store.events(run_id=run_id)]


def test_plan_renders_every_step_without_touching_anything(
    engine: Engine, cluster: FakeCluster
) -> None:
    assert engine.registry.get(REF).ref == "flannel.restart-pods@1.2.0"  # newest: the default
    plan = engine.plan(PINNED, {"nodes": "w2"}, who("alice"))
    view = plan.to_json()
    assert [s["risk"] for s in view["steps"]] == ["read", "destructive"]
    assert view["steps"][1]["actions"][0]["render"] == (
        "DELETE /api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-w2aaa  (on w2)"
    )
    assert view["targets"] == ["node/w2"]
    assert cluster.calls == []


def test_older_version_can_be_pinned(engine: Engine) -> None:
    plan = engine.plan(f"{REF}@1.0.0", {"node": "w2"}, who("alice"))
    assert plan.runbook.ref == "flannel.restart-pods@1.0.0"
    with pytest.raises(
        UnknownRunbook, match=r"no version 9\.9\.9; available: 1\.2\.0, 1\.1\.0, 1\.0\.0"
    ):
        engine.plan(f"{REF}@9.9.9", {"node": "w2"}, who("alice"))


def test_run_pauses_before_destructive_step(
    engine: Engine, cluster: FakeCluster, store: SqliteStore
) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    assert run.status == "awaiting_approval"
    assert run.next_step == 1  # the read step ran
    assert deletes(cluster) == []
    assert kinds(store, run.id)[-1] == "approval_requested"


def test_valid_approval_applies_and_proves_the_fix(
    engine: Engine, cluster: FakeCluster, store: SqliteStore
) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    done = engine.approve(run.id, who("bob"), plan_hash=run.plan_hash[7:19])
    assert done.status == "succeeded"
    assert deletes(cluster) == [("delete_pod", "kube-flannel", "kube-flannel-ds-w2aaa")]
    check = next(e for e in store.events(run_id=run.id) if e.kind == "check")
    assert check.data["ok"] is True and check.data["attempts"] > 1  # waited for Ready
    assert store.verify().ok


def test_self_approval_is_refused(engine: Engine, cluster: FakeCluster) -> None:
    policy = dataclasses.replace(POLICY, groups={"approvers": frozenset({"alice", "bob"})})
    engine.policy = policy
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    with pytest.raises(ApprovalRefused, match="alice requested this run and cannot approve it"):
        engine.approve(run.id, who("alice"))
    assert deletes(cluster) == []


def test_non_approver_is_refused_naming_the_role(engine: Engine) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    with pytest.raises(NotAllowed, match="approving needs group `approvers`"):
        engine.approve(run.id, who("mallory"))


def test_expired_approval_is_refused(
    engine: Engine, clock: FakeClock, cluster: FakeCluster, store: SqliteStore
) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    clock.advance(31 * 60)
    with pytest.raises(ApprovalRefused, match="approval window of run 1 closed"):
        engine.approve(run.id, who("bob"))
    assert store.run(run.id).status == "expired"
    assert deletes(cluster) == []
    # the lock on w2 is released: a new run may start
    assert engine.start(PINNED, {"nodes": "w2"}, who("alice")).status == "awaiting_approval"


def test_approval_of_a_stale_plan_hash_is_refused(engine: Engine, cluster: FakeCluster) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    with pytest.raises(ApprovalRefused, match="changed since you saw it"):
        engine.approve(run.id, who("bob"), plan_hash="0123456789ab")
    assert deletes(cluster) == []


def test_approval_is_refused_when_the_cluster_changed_the_plan(
    engine: Engine, cluster: FakeCluster, store: SqliteStore
) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    # flannel's pod on w2 was replaced by someone else meanwhile: the approved DELETE is stale
    cluster.pods = [
        p if p.node != "w2" else dataclasses.replace(p, name="kube-flannel-ds-zzz")
        for p in cluster.pods
    ]
    with pytest.raises(ApprovalRefused, match="changed after it was requested"):
        engine.approve(run.id, who("bob"))
    again = store.run(run.id)
    assert again.status == "awaiting_approval" and again.plan_hash != run.plan_hash
    assert deletes(cluster) == []
    assert "plan_changed" in kinds(store, run.id)
    assert engine.approve(run.id, who("carol")).status == "succeeded"
    assert deletes(cluster) == [("delete_pod", "kube-flannel", "kube-flannel-ds-zzz")]


def test_approval_is_refused_when_the_runbook_code_changed(
    make_engine: Callable[..., Engine], registry: Registry, cluster: FakeCluster
) -> None:
    run = make_engine().start(PINNED, {"nodes": "w2"}, who("alice"))
    patched = [
        rb if rb.ref != f"{REF}@1.1.0" else dataclasses.replace(rb, code_hash="sha256:x")
        for rb in registry.all()
    ]
    upgraded = make_engine(registry=Registry(patched))
    with pytest.raises(ApprovalRefused, match="no longer applies"):
        upgraded.approve(run.id, who("bob"))
    assert deletes(cluster) == []


def test_n_of_m_approvals(make_engine: Callable[..., Engine], cluster: FakeCluster) -> None:
    policy = dataclasses.replace(POLICY, rules={REF: RunbookRule(approvals=2)})
    engine = make_engine(policy=policy)
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    assert engine.approve(run.id, who("bob")).status == "awaiting_approval"
    with pytest.raises(InvalidState, match="bob already approved run 1"):
        engine.approve(run.id, who("bob"))
    assert deletes(cluster) == []
    assert engine.approve(run.id, who("carol")).status == "succeeded"
    assert len(deletes(cluster)) == 1


def test_runbook_can_demand_more_approvals(engine: Engine, cluster: FakeCluster) -> None:
    run = engine.start("test.crash", {"node": "w1"}, who("alice"))
    assert run.approvals_required == 2


def test_approver_who_lost_the_role_does_not_count(
    make_engine: Callable[..., Engine], cluster: FakeCluster, store: SqliteStore
) -> None:
    policy = dataclasses.replace(POLICY, rules={REF: RunbookRule(approvals=2)})
    run = make_engine(policy=policy).start(PINNED, {"nodes": "w2"}, who("alice"))
    make_engine(policy=policy).approve(run.id, who("bob"))
    demoted = dataclasses.replace(
        policy, groups={**policy.groups, "approvers": frozenset({"carol", "dave"})}
    )
    assert make_engine(policy=demoted).approve(run.id, who("carol")).status == ("awaiting_approval")
    assert deletes(cluster) == []


def test_deny_ends_the_run_and_frees_the_node(
    engine: Engine, cluster: FakeCluster, store: SqliteStore
) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    denied = engine.deny(run.id, who("bob"), "not during the release")
    assert denied.status == "denied"
    with pytest.raises(InvalidState, match=r"has ended \(denied\)"):
        engine.approve(run.id, who("carol"))
    assert deletes(cluster) == []
    denial = next(e for e in store.events(run_id=run.id) if e.kind == "denied")
    assert denial.data["reason"] == "not during the release" and denial.actor == "bob"
    assert engine.start(PINNED, {"nodes": "w2"}, who("alice")).status == "awaiting_approval"


def test_requester_cancels_own_run(engine: Engine) -> None:
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    assert engine.cancel(run.id, who("alice")).status == "cancelled"
    with pytest.raises(InvalidState, match="already ended"):
        engine.cancel(run.id, who("alice"))


def test_one_run_at_a_time_changes_a_node(engine: Engine) -> None:
    first = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    with pytest.raises(TargetBusy) as exc:
        engine.start(PINNED, {"nodes": "w1,w2"}, who("alice"))
    assert str(exc.value).startswith(
        f"node w2 on cluster default is being changed by run {first.id} (requested by @alice)"
    )
    assert engine.start(PINNED, {"nodes": "w3"}, who("alice")).status == "awaiting_approval"


def test_read_only_plan_needs_no_lock_and_anyone_may_plan(engine: Engine) -> None:
    engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    assert engine.plan(PINNED, {"nodes": "w2"}, who("mallory")).targets == ("node/w2",)


def test_requester_needs_the_run_role_for_destructive_runbooks(engine: Engine) -> None:
    with pytest.raises(NotAllowed, match=r"mallory may not run flannel\.restart-pods@1\.1\.0"):
        engine.start(PINNED, {"nodes": "w2"}, who("mallory"))


def test_unknown_node_names_known_nodes(engine: Engine) -> None:
    with pytest.raises(
        UnknownNode, match="node `w9` is not in the cluster; known nodes: w1, w2, w3"
    ):
        engine.start(PINNED, {"nodes": "w9"}, who("alice"))


@pytest.mark.parametrize("value", ["w2;reboot", "$(reboot)", "w2 w3", "W2", "w2`id`", "../w2"])
def test_shell_metacharacters_in_node_names_are_rejected(engine: Engine, value: str) -> None:
    with pytest.raises(ParameterError, match="is not a valid node name"):
        engine.start(PINNED, {"nodes": value}, who("alice"))


def test_post_check_that_never_passes_fails_the_run(
    engine: Engine, cluster: FakeCluster, store: SqliteStore
) -> None:
    cluster.restart_seconds = None
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    done = engine.approve(run.id, who("bob"))
    assert done.status == "failed"
    assert "new_pods_ready" in (done.error or "") and "180s" in (done.error or "")
    assert kinds(store, run.id)[-1] == "run_failed"


def test_a_plan_needing_approval_runs_only_its_reads_before_it(
    engine: Engine, cluster: FakeCluster
) -> None:
    """The change step comes before the destructive one, but the approver approves the whole
    plan: nothing is changed until then, and failed commands fail the run."""
    from flannel_bot.ports.nodes import CommandResult

    run = engine.start("test.node-bounce", {"node": "w1"}, who("alice"))
    assert run.status == "awaiting_approval" and run.next_step == 1
    assert ("run", "w1", "cat", "/run/flannel/subnet.env") in cluster.calls
    assert not any("down" in c for c in cluster.calls)
    cluster.command_results[("w1", "ip", "link", "delete", "cni0")] = CommandResult(
        "w1", ("ip", "link", "delete", "cni0"), 1, "", 'Cannot find device "cni0"'
    )
    done = engine.approve(run.id, who("bob"))
    assert done.status == "failed"
    assert "exited 1" in (done.error or "") and "Cannot find device" in (done.error or "")


def test_change_steps_can_be_gated_by_policy(
    make_engine: Callable[..., Engine], cluster: FakeCluster
) -> None:
    engine = make_engine(policy=dataclasses.replace(POLICY, change_needs_approval=True))
    run = engine.start("test.node-bounce", {"node": "w1"}, who("alice"))
    assert run.status == "awaiting_approval" and run.next_step == 1
    assert not any(c[:2] == ("run", "w1") and "down" in c for c in cluster.calls)


def test_a_bug_in_a_step_is_recorded_with_its_traceback(
    make_engine: Callable[..., Engine], store: SqliteStore
) -> None:
    engine = make_engine()
    run = engine.start("test.crash", {"node": "w1"}, who("alice"))
    engine.approve(run.id, who("bob"))
    with pytest.raises(RuntimeError, match="bug in the check"):
        engine.approve(run.id, who("carol"))
    crashed = store.events(run_id=run.id)[-1]
    assert crashed.kind == "run_crashed" and "RuntimeError" in crashed.data["traceback"]
    assert store.run(run.id).status == "failed"
    assert store.verify().ok


def test_dead_owner_makes_a_running_run_interrupted(
    make_engine: Callable[..., Engine], store: SqliteStore, cluster: FakeCluster
) -> None:
    engine = make_engine()
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    with store.transaction() as tx:  # as if a process died inside step 2
        tx.update_run(
            run.id, status="running", owner="gone", current_step=1, approved_plan_hash=run.plan_hash
        )
    assert make_engine().recover() == [run.id]
    after = store.run(run.id)
    assert after.status == "interrupted" and after.current_step is None
    with pytest.raises(InvalidState, match="interrupted mid-step and is never resumed"):
        engine.approve(run.id, who("bob"))
    assert deletes(cluster) == []
    assert engine.start(PINNED, {"nodes": "w2"}, who("alice")).status == "awaiting_approval"


def test_live_owner_keeps_its_run(make_engine: Callable[..., Engine], store: SqliteStore) -> None:
    engine = make_engine()
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    with store.transaction() as tx:
        tx.update_run(run.id, status="running", owner="test-owner")
    assert engine.recover() == []


def test_concurrent_approvals_apply_once(
    tmp_path: Path, registry: Registry, clock: FakeClock, cluster: FakeCluster
) -> None:
    """Nine approvers click at once, each on its own connection: the pod is deleted once."""
    setup = SqliteStore(tmp_path / "race.db", clock)

    def make() -> Engine:
        store = SqliteStore(tmp_path / "race.db", clock)
        return Engine(
            store, registry, POLICY, cluster, cluster, clock, "test-owner", lambda o: True
        )

    run = make().start(PINNED, {"nodes": "w2"}, who("alice"))
    approvers = ["bob", "carol", "dave"] * 3
    policy_all = dataclasses.replace(
        POLICY, groups={**POLICY.groups, "approvers": frozenset(approvers)}
    )
    barrier = threading.Barrier(len(approvers))
    outcomes: list[str] = []

    def click(user: str) -> None:
        engine = make()
        engine.policy = policy_all
        barrier.wait()
        try:
            outcomes.append(engine.approve(run.id, who(user)).status)
        except (InvalidState, ApprovalRefused) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=click, args=(u,)) for u in approvers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(deletes(cluster)) == 1
    assert outcomes.count("succeeded") == 1
    assert setup.run(run.id).status == "succeeded"
    assert setup.verify().ok


def test_change_step_without_check_is_rejected_at_load_time() -> None:
    import types

    module = types.ModuleType("bad")
    module.__file__ = __file__
    module.__doc__ = "Bad."
    exec(
        "from dataclasses import dataclass\n"
        "from flannel_bot.runbook import Risk, step\n"
        "ID = 'test.bad'\nVERSION = '1.0.0'\n"
        "@dataclass(frozen=True)\nclass Params:\n    pass\n"
        "@step('x', risk=Risk.DESTRUCTIVE)\ndef x(f, p):\n    return []\n",
        module.__dict__,
    )
    with pytest.raises(TypeError, match="needs a check= that proves its effect"):
        load_runbook(module)


def test_policy_file_rule_by_runbook_id(make_engine: Callable[..., Engine]) -> None:
    policy = Policy(
        groups={"approvers": frozenset({"bob"})}, rules={REF: RunbookRule(run=("user:zoe",))}
    )
    engine = make_engine(policy=policy)
    assert engine.start(PINNED, {"nodes": "w2"}, who("zoe")).status == "awaiting_approval"
    with pytest.raises(NotAllowed, match="it needs zoe"):
        engine.start(PINNED, {"nodes": "w3"}, who("alice"))


def test_a_broken_notifier_does_not_break_a_run(
    engine: Engine, store: SqliteStore, cluster: FakeCluster
) -> None:
    def broken(event: object) -> None:
        raise KeyError("template bug")

    store.subscribe(broken)
    run = engine.start(PINNED, {"nodes": "w2"}, who("alice"))
    assert engine.approve(run.id, who("bob")).status == "succeeded"
    assert len(deletes(cluster)) == 1
