"""Safety by construction: an action carries its least risk, planning refuses a step that declares
less, and runbooks read nodes through the probe set only."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from flannel_bot.errors import PlanRefused, ReadRefused
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.runbook import (
    BRIDGE_NF_CALL_IPTABLES,
    CreateObject,
    DeletePod,
    Disruption,
    ListPods,
    PatchConfigMap,
    PatchDaemonSet,
    Risk,
    RunOnNode,
    WaitForPod,
    WriteFile,
)
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.facts import LiveFacts
from flannel_bot.runs.registry import Registry, load_runbook
from flannel_bot.store import SqliteStore
from tests.conftest import who
from tests.fakes import FakeCluster

HEADER = (
    "from dataclasses import dataclass\n"
    "from flannel_bot.runbook import *\n"
    "@dataclass(frozen=True)\nclass Params:\n    node: NodeName\n"
)


def runbook_module(name: str, body: str) -> types.ModuleType:
    """A runbook module made from source, as a runbook author would write it."""
    module = types.ModuleType(f"tests_generated_{name.replace('.', '_').replace('-', '_')}")
    module.__file__ = __file__
    module.__doc__ = f"{name} (a runbook written for this test)."
    sys.modules[module.__name__] = module  # as an import would: dataclasses look it up
    exec(f"ID = {name!r}\nVERSION = '1.0.0'\n" + HEADER + body, module.__dict__)
    return module


@pytest.fixture
def engine_with(make_engine: Callable[..., Engine]) -> Callable[[str, str], Engine]:
    def make(name: str, body: str) -> Engine:
        return make_engine(registry=Registry([load_runbook(runbook_module(name, body))]))

    return make


SNEAKY = """
@step("Look at the node", risk=Risk.READ)
def look(facts, p):
    pod = facts.kube.list_pods("kube-flannel", "app=flannel", p.node)[0]
    return [DeletePod(pod.namespace, pod.name, p.node), RunOnNode(p.node, ("rm", "-rf", "/etc"))]
"""


def test_a_read_step_that_returns_a_pod_delete_is_refused(
    engine_with: Callable[[str, str], Engine], cluster: FakeCluster, store: SqliteStore
) -> None:
    engine = engine_with("test.sneaky", SNEAKY)
    for attempt in (engine.plan, engine.start):
        with pytest.raises(PlanRefused) as refused:
            attempt("test.sneaky", {"node": "w2"}, who("alice"))
        message = str(refused.value)
        assert "runbook test.sneaky@1.0.0, step 1 `look`" in message
        assert "declared read but returns a DeletePod" in message
        assert "DELETE /api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-w2aaa" in message
        assert "at least destructive" in message
    assert cluster.calls == []  # nothing applied, nothing run on a node
    assert store.recent_runs() == []  # and no run was started
    assert [e.kind for e in store.events()] == []


def test_a_change_step_cannot_carry_a_node_command_in_a_read_step_either(
    engine_with: Callable[[str, str], Engine], cluster: FakeCluster
) -> None:
    body = """
@step("Look", risk=Risk.READ)
def look(facts, p):
    return [RunOnNode(p.node, ("rm", "-rf", "/etc"))]
"""
    with pytest.raises(PlanRefused, match=r"declared read but returns a RunOnNode .*rm -rf /etc"):
        engine_with("test.rm", body).plan("test.rm", {"node": "w2"}, who("alice"))
    assert cluster.calls == []


def test_a_change_step_returning_a_destructive_action_is_refused(
    engine_with: Callable[[str, str], Engine],
) -> None:
    body = """
def done(facts, p, actions):
    return CheckResult(True, "ok")

@step("Restart", risk=Risk.CHANGE, check=done)
def restart(facts, p):
    return [DeletePod("kube-flannel", "kube-flannel-ds-w2aaa", p.node)]
"""
    with pytest.raises(PlanRefused, match="declared change but returns a DeletePod"):
        engine_with("test.restart", body).plan("test.restart", {"node": "w2"}, who("alice"))


def test_a_declared_risk_as_high_as_the_actions_plans(
    engine_with: Callable[[str, str], Engine],
) -> None:
    body = """
def done(facts, p, actions):
    return CheckResult(True, "ok")

@step("Restart", risk=Risk.DESTRUCTIVE, check=done)
def restart(facts, p):
    pod = DeletePod("kube-flannel", "kube-flannel-ds-w2aaa", p.node)
    return [pod, ListPods("kube-flannel", "app=flannel", p.node)]
"""
    plan = engine_with("test.ok", body).plan("test.ok", {"node": "w2"}, who("alice"))
    assert [a["type"] for a in plan.to_json()["steps"][0]["actions"]] == [
        "delete_pod",
        "list_pods",
    ]


@pytest.mark.parametrize(
    ("action", "risk"),
    [
        (ListPods("kube-flannel", "app=flannel", "w1"), Risk.READ),
        (WaitForPod("kube-flannel", "app=flannel", "w1"), Risk.READ),
        (RunOnNode("w1", ("cat", "/run/flannel/subnet.env")), Risk.READ),
        (RunOnNode("w1", ("iptables-save", "-t", "filter")), Risk.READ),
        (RunOnNode("w1", ("cat", "--", "/etc/cni/net.d/10-flannel.conflist")), Risk.READ),
        (RunOnNode("w1", ("cat", "--", "/etc/shadow")), Risk.CHANGE),
        (RunOnNode("w1", ("ip", "link", "delete", "cni0")), Risk.CHANGE),
        (RunOnNode("w1", ("sh", "-c", "cat /run/flannel/subnet.env; rm -rf /")), Risk.CHANGE),
        (WriteFile("w1", "/etc/sysctl.d/99-x.conf", "x = 1\n"), Risk.CHANGE),
        (PatchConfigMap("kube-system", "kube-proxy", (("config.conf", "x"),)), Risk.CHANGE),
        (PatchDaemonSet("kube-flannel", "kube-flannel-ds", "{}"), Risk.CHANGE),
        (CreateObject.of({"apiVersion": "v1", "kind": "Namespace"}), Risk.CHANGE),
        (DeletePod("kube-flannel", "p", "w1"), Risk.DESTRUCTIVE),
        (Disruption("w1", "pods lose networking"), Risk.DESTRUCTIVE),
    ],
)
def test_each_action_type_declares_the_least_risk_it_carries(action: object, risk: Risk) -> None:
    assert action.least_risk is risk  # type: ignore[attr-defined]


def test_an_action_the_engine_cannot_apply_is_refused(
    engine_with: Callable[[str, str], Engine],
) -> None:
    body = """
@dataclass(frozen=True)
class Reboot:
    node: str
    target = "node/w2"
    least_risk = Risk.READ
    def render(self):
        return "reboot"
    def to_json(self):
        return {"type": "reboot"}

@step("Reboot", risk=Risk.READ)
def reboot(facts, p):
    return [Reboot(p.node)]
"""
    with pytest.raises(PlanRefused, match="returns a Reboot, which the engine has no applier for"):
        engine_with("test.reboot", body).plan("test.reboot", {"node": "w2"}, who("alice"))


def test_a_planner_reads_nodes_through_the_probe_set_only(
    engine_with: Callable[[str, str], Engine], cluster: FakeCluster
) -> None:
    body = """
@step("Peek", risk=Risk.READ)
def peek(facts, p):
    facts.run(p.node, ["sh", "-c", "id > /tmp/owned"])
    return []
"""
    with pytest.raises(PlanRefused, match=r"step 1 `peek` was refused: `sh -c 'id > /tmp/owned'`"):
        engine_with("test.peek", body).plan("test.peek", {"node": "w2"}, who("alice"))
    assert cluster.calls == []


def test_facts_read_a_probe_and_parse_it_once(cluster: FakeCluster) -> None:
    facts = LiveFacts(cluster, cluster)
    argv = ("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")
    cluster.command_results[("w1", *argv)] = CommandResult("w1", argv, 0, "1\n")
    assert facts.read("w1", BRIDGE_NF_CALL_IPTABLES) == "1"
    assert facts.run("w1", ["iptables-save", "-t", "filter"]).ok  # a probe's argv: allowed
    with pytest.raises(ReadRefused, match="is not a read of the probe set"):
        facts.run("w1", ["cat", "--", "/root/.ssh/id_ed25519"])
    assert cluster.calls == [("run", "w1", *argv), ("run", "w1", "iptables-save", "-t", "filter")]


def test_no_change_says_what_was_checked(
    engine_with: Callable[[str, str], Engine], store: SqliteStore
) -> None:
    body = """
def done(facts, p, actions):
    return CheckResult(True, "ok")

@step("Load br_netfilter", risk=Risk.CHANGE, check=done)
def load(facts, p):
    return NoChange(f"br_netfilter is loaded on {p.node}")
"""
    engine = engine_with("test.idle", body)
    plan = engine.plan("test.idle", {"node": "w2"}, who("alice"))
    assert plan.to_json()["steps"][0]["no_change"] == "br_netfilter is loaded on w2"
    run = engine.start("test.idle", {"node": "w2"}, who("alice"))
    assert run.status == "succeeded"
    finished = [e for e in store.events(run_id=run.id) if e.kind == "step_finished"]
    assert finished[0].data["outcome"] == "no change: br_netfilter is loaded on w2"


def test_a_step_with_nothing_to_do_and_no_reason_keeps_the_old_wording(
    engine_with: Callable[[str, str], Engine], store: SqliteStore
) -> None:
    body = """
def done(facts, p, actions):
    return CheckResult(True, "ok")

@step("Load br_netfilter", risk=Risk.CHANGE, check=done)
def load(facts, p):
    return []
"""
    engine = engine_with("test.quiet", body)
    assert (
        "no_change" not in engine.plan("test.quiet", {"node": "w2"}, who("a")).to_json()["steps"][0]
    )
    run = engine.start("test.quiet", {"node": "w2"}, who("alice"))
    finished = [e for e in store.events(run_id=run.id) if e.kind == "step_finished"]
    assert finished[0].data["outcome"] == "no change: already in the desired state"
