"""Every remediation runbook against the lab it was written for, through the real executors.

Each case breaks the lab the way the seed incident did, then: diagnose names the finding first
and offers this runbook; the plan is made; the run stops before anything changes until a second
person approves (the requester's own approval is refused); the approved run applies, its
post-checks and the diagnose re-run pass; the whole cluster diagnoses clean and pods ping across
nodes over VXLAN again; running it a second time changes nothing and needs no approval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.errors import ApprovalRefused, NotAllowed, ParameterError, UnknownNode
from flannel_bot.lab import faults
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.network import in_netns
from flannel_bot.lab.nodes import write_ipam
from flannel_bot.ports.probes import PROBES
from flannel_bot.ports.store import Requester
from flannel_bot.settings import load_settings
from flannel_bot.wiring import App, build_app

from . import rbac
from .conftest import ACCESS, all_reachable, bot_config, healthy, node_exec_pods

pytestmark = pytest.mark.integration


def _drop_forward_accepts(lab: Lab, node: str) -> None:
    """Undo node.fix-forward-policy's rules (flannel's own FLANNEL-FWD makes them redundant)."""
    netns = lab.spec.by_name(node).netns
    rules = in_netns(netns, ["iptables", "-S", "FORWARD"])
    for rule in rules.splitlines():
        if "flannel-bot" in rule and rule.startswith("-A "):
            argv = ["iptables", "-D", *rule.split()[1:]]
            subprocess.run(
                ["ip", "netns", "exec", netns, "sh", "-c", " ".join(argv).replace('"', "'")],
                check=False,
            )
    in_netns(netns, ["iptables", "-P", "FORWARD", "ACCEPT"])


def _unpin_iface(lab: Lab, node: str) -> None:
    """The fix pins flanneld to eth0 and leaves the NAT-like eth1 alone: remove both."""
    faults.undo(lab, "wrong-iface", node)
    ds = lab.api.get("daemonsets", "kube-flannel-ds", "kube-flannel")
    args = [a for a in ds["spec"]["template"]["spec"]["containers"][0]["args"] if "iface" not in a]
    lab.api.patch(
        "daemonsets",
        "kube-flannel-ds",
        {"spec": {"template": {"spec": {"containers": [{"name": "kube-flannel", "args": args}]}}}},
        "kube-flannel",
        "strategic",
    )


@dataclass(frozen=True)
class Case:
    scenario: str
    node: str
    runbook: str
    params: dict[str, str]
    finding: str
    cleanup: Callable[[Lab, str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the test id, where one scenario is fixed two ways

    def __str__(self) -> str:
        return self.label or self.scenario


CASES = [
    Case("br-netfilter", "w2", "node.fix-br-netfilter", {"node": "w2"}, "br-netfilter-missing"),
    Case(
        "stale-cni0",
        "w2",
        "node.clean-interfaces",
        {"node": "w2", "disrupt_pods": "true"},
        "stale-interface-address",
    ),
    Case(
        "stale-cni0",
        "w2",
        "node.clean-interfaces",
        {"node": "w2", "disrupt_pods": "true", "wipe_cni_state": "true"},
        "stale-interface-address",
        label="stale-cni0-wipe-cni-state",
    ),
    Case("ipam-leak", "w3", "node.release-leaked-ips", {"node": "w3"}, "ipam-exhausted"),
    Case(
        "cni-config-missing", "w2", "node.restore-cni-config", {"node": "w2"}, "cni-config-invalid"
    ),
    Case("cni-config-empty", "w1", "node.restore-cni-config", {"node": "w1"}, "cni-config-invalid"),
    Case("kube-proxy-typo", "w1", "kube-proxy.fix-config", {}, "kube-proxy-config-invalid"),
    Case("ipvs-local-route", "w2", "node.fix-ipvs-local-route", {"node": "w2"}, "ipvs-local-route"),
    Case("rbac-missing", "w1", "flannel.repair", {}, "flannel-rbac-missing"),
    Case("flannel-missing", "w1", "flannel.repair", {}, "flannel-not-deployed"),
    Case("flannel-uninstalled", "w1", "flannel.repair", {}, "flannel-not-deployed"),
    Case(
        "wrong-iface",
        "w2",
        "flannel.repair",
        {"iface": "eth0"},
        "wrong-interface",
        cleanup=_unpin_iface,
    ),
    Case(
        "forward-drop",
        "w3",
        "node.fix-forward-policy",
        {"node": "w3"},
        "forward-drop",
        cleanup=_drop_forward_accepts,
    ),
    Case("fdb-missing", "w2", "flannel.restart-pods", {"nodes": "w2"}, "vxlan-peer-missing"),
    Case("subnet-env-missing", "w3", "flannel.restart-pods", {"nodes": "w3"}, "subnet-env-missing"),
]

ALICE = Requester("alice", {"adapter": "test", "user": "alice"})
BOB = Requester("bob", {"adapter": "test", "user": "bob"})


@pytest.fixture(scope="module")
def shipped_rbac(flannel_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig whose token the lab's API server holds to deploy/base/rbac.yaml, so every
    runbook here runs with exactly the permissions flannel-bot ships with."""
    flannel_lab.api.authorizer.grant(rbac.TOKEN, rbac.granted_rules(), rbac.USER)
    path = tmp_path_factory.mktemp("rbac") / "kubeconfig"
    return flannel_lab.api.write_kubeconfig(path, token=rbac.TOKEN, context="flannel-bot-sa")


@pytest.fixture
def app(
    flannel_lab: Lab, tmp_path: Path, shipped_rbac: Path, request: pytest.FixtureRequest
) -> Iterator[App]:
    """The bot as deployed; it reaches nodes over SSH unless the test asks for another
    `[nodes] access` (indirect parametrization); over pods, it must leave none behind."""
    access = str(getattr(request, "param", "ssh"))
    settings = load_settings(
        bot_config(flannel_lab, access, tmp_path),
        env={"HOME": "/root"},
        overrides={
            "db": str(tmp_path / "bot.db"),
            "kubeconfig": str(shipped_rbac),
            "context": "flannel-bot-sa",
        },
    )
    app = build_app(settings)
    # gate `change` steps too, so the change-only runbooks (restore-cni-config, forward-policy)
    # also wait for a second person here; by default only destructive plans wait
    app.engine.policy = dataclasses.replace(app.engine.policy, change_needs_approval=True)
    try:
        yield app
    finally:
        with contextlib.suppress(Exception):
            app.engine.nodes.close()  # type: ignore[attr-defined]
    if access == "pod":
        assert node_exec_pods(flannel_lab) == [], "node-exec pods left behind"


def findings(app: App, nodes: list[str] | None = None) -> list[dict[str, Any]]:
    reply = app.service.handle(["diagnose", *(nodes or [])], ALICE)
    assert reply.ok, reply.data
    return [f for f in reply.data["findings"] if f["severity"] != "info"]


def lab_state(lab: Lab, node: str) -> str:
    """What a fix would change: the node's links, routes, iptables, files and the API objects."""
    spec = lab.spec.by_name(node)
    return "\n".join(
        [
            in_netns(spec.netns, ["ip", "-br", "addr"]),
            in_netns(spec.netns, ["ip", "route", "show", "table", "all"]),
            in_netns(spec.netns, ["iptables", "-S"]),
            *(sorted(str(p) for p in spec.dir.rglob("*") if p.is_file() and "ssh" not in p.parts)),
            repr(sorted(p["metadata"]["name"] for p in lab.api.list("pods"))),
            repr(lab.api.get("configmaps", "kube-proxy", "kube-system")["data"]),
        ]
    )


RAN: set[str] = set()  # the cases that ran in this session: the RBAC check needs them all


@pytest.mark.parametrize("app", ACCESS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_runbook_fixes_its_incident(case: Case, flannel_lab: Lab, app: App) -> None:
    RAN.add(case.scenario)
    lab = flannel_lab
    ready, reach = healthy(lab)
    assert ready and all_reachable(reach), f"the lab was left broken before this case: {reach}"
    pods_before = {p["metadata"]["name"] for p in lab.api.list("pods", "default")}
    faults.inject(lab, case.scenario, case.node)
    # a reservation left from the node's old subnet, which only wipe_cni_state removes
    old_lease = (
        lab.spec.by_name(case.node).dir / "var-lib-cni" / "networks" / "cbr0" / "10.244.250.7"
    )
    if case.params.get("wipe_cni_state") == "true":
        old_lease.parent.mkdir(parents=True, exist_ok=True)
        old_lease.write_text("0123456789abcdef\neth0")
    fixed = False
    try:
        # diagnose names the incident first and offers this runbook with these parameters
        first = findings(app)[0]
        assert first["id"] == case.finding, [(f["id"], f["nodes"]) for f in findings(app)]
        assert first["fix"]["runbook"] == case.runbook
        assert {k: v for k, v in first["fix"]["params"].items() if k in case.params} == {
            k: v for k, v in case.params.items() if k in first["fix"]["params"]
        }

        # the plan shows real actions; starting stops before any change until approved
        plan = app.engine.plan(case.runbook, case.params, ALICE)
        assert plan.changes_anything
        before = lab_state(lab, case.node)
        run = app.engine.start(case.runbook, case.params, ALICE)
        assert run.status == "awaiting_approval", run
        assert lab_state(lab, case.node) == before
        with pytest.raises(ApprovalRefused):
            app.engine.approve(run.id, ALICE)
        assert lab_state(lab, case.node) == before

        # a second person approves: applied, checked, verified by diagnose
        done = app.engine.approve(run.id, BOB)
        events = app.store.events(run_id=run.id)
        assert done.status == "succeeded", (done.error, [(e.kind, e.data) for e in events][-6:])
        verify = [e for e in events if e.kind == "verify"]
        assert verify and verify[-1].data["ok"], verify
        assert all(e.data["ok"] for e in events if e.kind == "check")
        if case.params.get("wipe_cni_state") == "true":
            assert not old_lease.exists(), "wipe_cni_state left the old subnet's reservation"
        fixed = True

        # the whole cluster is clean and the overlay carries pod traffic across nodes again
        assert findings(app) == []
        assert all_reachable(lab.status()["pod_reachability"])

        # again: nothing to do, so no approval and no change
        again = app.engine.start(case.runbook, case.params, ALICE)
        assert again.status == "succeeded", again
        final = [e for e in app.store.events(run_id=again.id) if e.kind == "run_succeeded"]
        assert final[0].data["changed"] is False
        assert not [e for e in app.store.events(run_id=again.id) if e.kind == "approval_requested"]
    finally:
        # pods the incident left stuck (and the kubelet may since have started) go, with
        # their IPAM reservations, so the next case starts from the lab as built
        for pod in lab.api.list("pods", "default"):
            if pod["metadata"]["name"] not in pods_before:
                lab.api.delete("pods", pod["metadata"]["name"], "default")
        write_ipam(lab.spec.by_name(case.node), lab.spec.pods_per_node)
        if case.cleanup is not None:
            case.cleanup(lab, case.node)
        if not fixed:
            with contextlib.suppress(Exception):
                faults.undo(lab, case.scenario, case.node)
        lab.faults.get(case.scenario, set()).discard(case.node)


MALLORY = Requester("mallory", {"adapter": "test", "user": "mallory"})


def test_a_non_approver_cannot_approve_and_nothing_changes(flannel_lab: Lab, app: App) -> None:
    faults.inject(flannel_lab, "forward-drop", "w2")
    try:
        before = lab_state(flannel_lab, "w2")
        run = app.engine.start("node.fix-forward-policy", {"node": "w2"}, ALICE)
        with pytest.raises(NotAllowed, match="mallory"):
            app.engine.approve(run.id, MALLORY)
        app.engine.deny(run.id, BOB, "not now")
        assert app.store.run(run.id).status == "denied"
        assert lab_state(flannel_lab, "w2") == before
    finally:
        faults.undo(flannel_lab, "forward-drop", "w2")


NODE_RUNBOOKS = [
    ("node.fix-br-netfilter", {}),
    ("node.clean-interfaces", {}),
    ("node.release-leaked-ips", {}),
    ("node.restore-cni-config", {}),
    ("node.fix-ipvs-local-route", {}),
    ("node.fix-forward-policy", {}),
    ("flannel.restart-pods", {"nodes": "w1"}),
    ("flannel.repair", {}),
    ("kube-proxy.fix-config", {}),
]


@pytest.mark.parametrize(("runbook", "params"), NODE_RUNBOOKS, ids=[r for r, _ in NODE_RUNBOOKS])
def test_on_a_healthy_node_there_is_nothing_to_do(
    runbook: str, params: dict[str, str], flannel_lab: Lab, app: App
) -> None:
    params = params or ({"node": "w1"} if runbook.startswith("node.") else {})
    before = lab_state(flannel_lab, "w1")
    plan = app.engine.plan(runbook, params, ALICE)
    assert not plan.changes_anything, [a.render() for s in plan.steps for a in s.actions]
    run = app.engine.start(runbook, params, ALICE)
    assert run.status == "succeeded", run.error
    assert lab_state(flannel_lab, "w1") == before


def test_the_wrong_node_is_left_alone_and_the_run_says_the_problem_is_still_there(
    flannel_lab: Lab, app: App
) -> None:
    """br_netfilter is missing on w2; the runbook is pointed at w1 by mistake."""
    faults.inject(flannel_lab, "br-netfilter", "w2")
    try:
        before = lab_state(flannel_lab, "w1")
        run = app.engine.start("node.fix-br-netfilter", {"node": "w1"}, ALICE)
        assert run.status == "succeeded" and lab_state(flannel_lab, "w1") == before
        assert findings(app)[0]["id"] == "br-netfilter-missing"  # w2 still broken
        with pytest.raises(UnknownNode, match="known nodes: w1, w2, w3"):
            app.engine.start("node.fix-br-netfilter", {"node": "w9"}, ALICE)
        with pytest.raises(ParameterError, match="not a valid node name"):
            app.engine.start("node.fix-br-netfilter", {"node": "w2;reboot"}, ALICE)
    finally:
        faults.undo(flannel_lab, "br-netfilter", "w2")


def test_a_fix_that_does_not_take_fails_the_run_with_the_evidence(
    flannel_lab: Lab, app: App
) -> None:
    """cni0 on w2 carries a stale address, and someone runs the br_netfilter fix there: it has
    nothing to change, and the run must say the problem is still there instead of succeeding."""
    pods_before = {p["metadata"]["name"] for p in flannel_lab.api.list("pods", "default")}
    faults.inject(flannel_lab, "stale-cni0", "w2")
    try:
        run = app.engine.start("node.fix-br-netfilter", {"node": "w2"}, ALICE)
        assert run.status == "failed"
        assert "nothing here needed changing, yet diagnose still shows" in (run.error or "")
        assert "flannel-crashloop" in (run.error or "") and "Next: run `diagnose w2`" in (
            run.error or ""
        )
        verify = [e for e in app.store.events(run_id=run.id) if e.kind == "verify"][-1]
        assert not verify.data["ok"] and verify.data["findings"][0]["evidence"]
        # the right runbook refuses to cut running pods off unless the plan says it will (how
        # many: w2's workload pods, which an earlier test's recreated pods may have added to)
        with pytest.raises(ParameterError, match=r"(\d+) running pod\(s\) on w2 use cni0") as no:
            app.engine.plan("node.clean-interfaces", {"node": "w2"}, ALICE)
        count = int(str(no.value).split(" ", 1)[0])
        assert count >= 1
        plan = app.engine.plan("node.clean-interfaces", {"node": "w2", "disrupt_pods": "1"}, ALICE)
        render = plan.steps[0].actions[0].render()
        assert f"DISRUPTS w2: {count} pod(s) lose pod networking" in render
    finally:
        faults.undo(flannel_lab, "stale-cni0", "w2")
        for pod in flannel_lab.api.list("pods", "default"):
            if pod["metadata"]["name"] not in pods_before:
                flannel_lab.api.delete("pods", pod["metadata"]["name"], "default")


def test_node_check_reports_without_changing_anything(flannel_lab: Lab, app: App) -> None:
    faults.inject(flannel_lab, "ipvs-local-route", "w3")
    try:
        before = lab_state(flannel_lab, "w3")
        run = app.engine.start("node.check", {"node": "w3"}, ALICE)
        assert run.status == "succeeded" and lab_state(flannel_lab, "w3") == before
        events = app.store.events(run_id=run.id)
        outputs = [e for e in events if e.kind == "action_finished"]
        assert len(outputs) == len(PROBES)  # every probe ran, failing ones recorded
        report = [e for e in events if e.kind == "check"][-1].data["detail"]
        assert "CRITICAL ipvs-local-route" in report
        assert "run node.fix-ipvs-local-route node=w3" in report
    finally:
        faults.undo(flannel_lab, "ipvs-local-route", "w3")


# Verbs the lab's API server never asks about: a real one checks `bind` and `escalate` when the
# bot creates flannel's ClusterRole(Binding); leases are the leader election's, not a runbook's.
NOT_EXERCISED_HERE = {"bind", "escalate"}


def test_the_shipped_rbac_allowed_every_call_and_every_rule_was_needed(flannel_lab: Lab) -> None:
    """Runs last in this module: everything above ran as the bot's ServiceAccount."""
    if {c.scenario for c in CASES} != RAN:
        pytest.skip("needs every incident above to have run in this session (no -k)")
    decisions = [d for d in flannel_lab.api.authorizer.decisions if d[0] == rbac.TOKEN]
    assert decisions, "the runbooks above did not run with the shipped RBAC"
    denied = sorted(
        {(a.verb, a.resource, a.namespace, a.name) for _, a, i in decisions if i is None}
    )
    assert denied == [], f"calls deploy/base/rbac.yaml does not allow: {denied}"
    used = {(i, a.verb) for _, a, i in decisions if i is not None}
    rules = rbac.granted_rules()
    unused = [
        (r.resources, verb, r.resource_names)
        for index, r in enumerate(rules)
        for verb in r.verbs
        if (index, verb) not in used
        and verb not in NOT_EXERCISED_HERE
        and "leases" not in r.resources
    ]
    assert unused == [], f"rules in deploy/base/rbac.yaml that nothing used: {unused}"
