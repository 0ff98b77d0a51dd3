"""Runbooks the distribution makes wrong are refused with the step to take by hand, at planning
(every version, whoever asks) and already in the diagnose reply (no command to paste)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flannel_bot.diagnosis.evidence import Evidence, ProbeOutput, since_flannel_came_up
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.errors import PlanRefused
from flannel_bot.ports.store import Store
from flannel_bot.runs.distributions import WRONG_ON
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.registry import Registry
from flannel_bot.service.views import diagnosis_view
from tests.conftest import who
from tests.fakes import FakeCluster
from tests.unit.test_rules import healthy

K3S = "v1.30.4+k3s1"


def as_k3s(cluster: FakeCluster, version: str = K3S) -> None:
    cluster.nodes = [replace(n, kubelet_version=version) for n in cluster.nodes]


@pytest.mark.parametrize(
    ("ref", "params", "distribution", "version", "instead"),
    [
        ("flannel.repair", {}, "k3s", K3S, "never apply the flannel manifest"),
        ("flannel.repair", {}, "rke2", "v1.29.4+rke2r1", "HelmChartConfig for rke2-canal"),
        ("flannel.repair@1.0.0", {}, "k3s", K3S, "--flannel-iface"),
        ("node.restore-cni-config", {"node": "w2"}, "k3s", K3S, "systemctl restart k3s"),
        ("node.clean-interfaces", {"node": "w2"}, "k3s", K3S, "ip link delete flannel.1"),
        ("flannel.restart-pods", {"nodes": "w2"}, "k3s", K3S, "journalctl -u k3s"),
    ],
)
def test_a_runbook_wrong_for_the_distribution_is_refused_with_the_manual_step(
    engine: Engine,
    cluster: FakeCluster,
    store: Store,
    ref: str,
    params: dict[str, str],
    distribution: str,
    version: str,
    instead: str,
) -> None:
    as_k3s(cluster, version)
    for attempt in (engine.plan, engine.start):
        with pytest.raises(PlanRefused) as refused:
            attempt(ref, params, who("alice"))
        message = str(refused.value)
        assert f"is not for {distribution} clusters" in message
        assert instead in message
    assert cluster.calls == []
    assert store.recent_runs() == []


def test_on_kubeadm_the_same_runbooks_plan(engine: Engine) -> None:
    plan = engine.plan("flannel.restart-pods", {"nodes": "w2"}, who("alice"))
    assert plan.runbook.id == "flannel.restart-pods"


def test_every_refusal_names_a_runbook_that_exists(registry: Registry) -> None:
    known = {rb.id for rb in registry.all()}
    assert {rid for rid, _ in WRONG_ON} <= known


def test_the_diagnose_reply_on_k3s_offers_the_manual_step_not_the_runbook(
    registry: Registry,
) -> None:
    ev = healthy()
    ev.nodes = [replace(n, kubelet_version=K3S) for n in ev.nodes]
    ev.pods = [p for p in ev.pods if p.labels.get("app") != "flannel"]
    ev.daemonsets, ev.configmaps = [], {}
    ev.probes["w2"]["ip-addr"] = replace(
        ev.probes["w2"]["ip-addr"],
        stdout=ev.probes["w2"]["ip-addr"].stdout.replace("10.244.2.1", "10.244.9.1"),
    )
    view = diagnosis_view(ev, registry)
    stale = [f for f in view["findings"] if f["id"] == "stale-interface-address"]
    assert stale, [f["id"] for f in view["findings"]]
    assert stale[0]["fix"]["command"] is None
    assert stale[0]["fix"]["runbook"] is None
    assert "systemctl restart k3s" in stale[0]["fix"]["manual"]
    assert not any(f["fix"]["runbook"] == "flannel.repair" for f in view["findings"])


def k3s_evidence() -> Evidence:
    """The healthy lab as k3s shows it: embedded flannel (no pods, DaemonSet or ConfigMap),
    /etc/cni/net.d and /opt/cni/bin empty, k3s's own CNI places filled."""
    ev = healthy()
    ev.nodes = [replace(n, kubelet_version=K3S) for n in ev.nodes]
    ev.pods = [p for p in ev.pods if p.labels.get("app") != "flannel"]
    ev.daemonsets, ev.configmaps, ev.logs = [], {}, {}
    for probes in ev.probes.values():
        conf = probes["cni-config"].stdout.replace("/etc/cni/net.d", K3S_CNI)
        probes["k3s-cni-config"] = ProbeOutput(0, conf)
        probes["k3s-cni-bin"] = ProbeOutput(
            0, "bandwidth\nbridge\ncni\nfirewall\nflannel\nhost-local\nloopback\nportmap\n"
        )
        probes["cni-config"] = ProbeOutput(0, "")
        probes["cni-bin"] = ProbeOutput(
            2, "", "ls: cannot access '/opt/cni/bin': No such file or directory"
        )
    return ev


K3S_CNI = "/var/lib/rancher/k3s/agent/etc/cni/net.d"


def test_a_healthy_k3s_node_is_judged_by_k3s_s_cni_places() -> None:
    ev = k3s_evidence()
    assert [f.id for f in diagnose(ev) if f.severity != "info"] == []


def test_a_plugin_missing_from_k3s_s_bin_is_named_with_k3s_s_fix(registry: Registry) -> None:
    ev = k3s_evidence()
    listing = ev.probes["w3"]["k3s-cni-bin"].stdout.replace("portmap\n", "")
    ev.probes["w3"]["k3s-cni-bin"] = ProbeOutput(0, listing)
    view = diagnosis_view(ev, registry)
    first = view["findings"][0]
    assert (first["id"], first["summary"]) == (
        "cni-plugin-missing",
        "CNI plugins missing on w3: portmap",
    )
    assert "reinstall the same k3s release" in first["fix"]["manual"]
    assert first["fix"]["runbook"] is None


def journal(*lines: str) -> str:
    return "".join(
        f'time="2026-12-03T09:0{i}:00Z" level=info msg="{m}"\n' for i, m in enumerate(lines)
    )


BROKEN = (
    "Waiting to retrieve agent configuration; server is not ready: unable to find interface "
    "eth0: route ip+net: no such network interface"
)


def test_a_k3s_run_in_which_flannel_came_up_makes_the_runs_before_it_history() -> None:
    recovered = journal(
        "Starting k3s agent v1.30.4+k3s1 (98262b5d)",
        BROKEN,
        "Starting k3s agent v1.30.4+k3s1 (98262b5d)",
        "Failed to set sysctl: open /proc/sys/net/bridge/bridge-nf-call-iptables: no such file "
        "or directory",
        "Running flannel backend.",
    )
    kept = since_flannel_came_up(recovered)
    assert BROKEN not in kept
    assert "bridge-nf-call-iptables" in kept  # the current run's own complaint stays
    looping = journal(
        "Starting k3s agent v1.30.4+k3s1 (98262b5d)",
        BROKEN,
        "Starting k3s agent v1.30.4+k3s1 (98262b5d)",
    )
    assert since_flannel_came_up(looping) == looping  # never came up: every run says why
