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

from bot.core.engine import Requester
from bot.errors import ApprovalRefused
from bot.lab import faults
from bot.lab.lab import Lab
from bot.lab.network import in_netns
from bot.lab.nodes import write_ipam
from bot.settings import load_settings
from bot.wiring import App, build_app

from .conftest import all_reachable

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

    def __str__(self) -> str:
        return self.scenario


CASES = [
    Case("br-netfilter", "w2", "node.fix-br-netfilter", {"node": "w2"}, "br-netfilter-missing"),
    Case(
        "stale-cni0",
        "w2",
        "node.clean-interfaces",
        {"node": "w2", "disrupt_pods": "true"},
        "stale-interface-address",
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


@pytest.fixture
def app(flannel_lab: Lab, tmp_path: Path) -> Iterator[App]:
    settings = load_settings(
        flannel_lab.bot_config, env={"HOME": "/root"}, overrides={"db": str(tmp_path / "bot.db")}
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


@pytest.mark.parametrize("case", CASES, ids=str)
def test_runbook_fixes_its_incident(case: Case, flannel_lab: Lab, app: App) -> None:
    lab = flannel_lab
    faults.inject(lab, case.scenario, case.node)
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
            if pod["metadata"]["name"].startswith(f"web-{case.node}-"):
                lab.api.delete("pods", pod["metadata"]["name"], "default")
        write_ipam(lab.spec.by_name(case.node), lab.spec.pods_per_node)
        if case.cleanup is not None:
            case.cleanup(lab, case.node)
        if not fixed:
            with contextlib.suppress(Exception):
                faults.undo(lab, case.scenario, case.node)
        lab.faults.get(case.scenario, set()).discard(case.node)
