"""Diagnose through the real executors against the lab: every `lab break` scenario is named first,
on the right node; a healthy lab gives no warning-or-worse finding. Each runs once with the nodes
reached over SSH and once through node-exec pods (`[nodes] access`), with the same findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from flannel_bot.diagnosis.collect import collect
from flannel_bot.diagnosis.findings import Finding
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.executors.bundle import write_bundle
from flannel_bot.executors.kube import KubeClient
from flannel_bot.lab import faults
from flannel_bot.lab.lab import Lab
from flannel_bot.ports.clock import SystemClock
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_executors, evidence_from_bundle
from tests.lab.conftest import bot_config

pytestmark = pytest.mark.integration
NODE = "w2"
EXPECTED = {
    "br-netfilter": "br-netfilter-missing",
    "stale-cni0": "stale-interface-address",
    "ipam-leak": "ipam-exhausted",
    "cni-config-missing": "cni-config-invalid",
    "cni-config-empty": "cni-config-invalid",
    "subnet-env-missing": "subnet-env-missing",
    "kube-proxy-typo": "kube-proxy-config-invalid",
    "ipvs-local-route": "ipvs-local-route",
    "podcidr-missing": "podcidr-not-assigned",
    "rbac-missing": "flannel-rbac-missing",
    "flannel-missing": "flannel-not-deployed",
    "flannel-uninstalled": "flannel-not-deployed",
    "wrong-iface": "wrong-interface",
    "forward-drop": "forward-drop",
    "vxlan-blocked": "vxlan-blocked",
    "fdb-missing": "vxlan-peer-missing",
    "mtu-mismatch": "mtu-mismatch",
}


def run_diagnose(
    lab: Lab, bundle: Path | None = None, access: str = "ssh", config_dir: Path | None = None
) -> list[Finding]:
    """Diagnose live, reaching nodes over `access`; with `bundle`, also write a support bundle
    there from the same cluster."""
    config = bot_config(lab, access, config_dir or Path(lab.spec.dir))
    settings = load_settings(config, env={"HOME": "/root"})
    kube, nodes = build_executors(settings.cluster(), SystemClock())
    assert isinstance(kube, KubeClient)
    try:
        findings = diagnose(collect(kube, nodes, timeout=20))
        if bundle is not None:
            write_bundle(kube, nodes, bundle)
        return findings
    finally:
        close = getattr(nodes, "close", None)  # SSH connections; pods are gone already
        if close is not None:
            close()


# scenario -> access -> what diagnose concluded: both transports must conclude the same
CONCLUDED: dict[str, dict[str, list[tuple[str, str, tuple[str, ...]]]]] = {}


def concluded(scenario: str, access: str, findings: list[Finding]) -> None:
    """Record this transport's conclusions; the second transport to run must match the first."""
    seen = CONCLUDED.setdefault(scenario, {})
    seen[access] = [(f.id, f.severity, tuple(f.nodes)) for f in findings]
    assert len(set(map(tuple, seen.values()))) == 1, seen


def test_every_scenario_has_an_expected_finding() -> None:
    assert set(EXPECTED) == set(faults.SCENARIOS)


def test_healthy_lab_has_no_warnings(flannel_lab: Lab, access: str, tmp_path: Path) -> None:
    findings = run_diagnose(flannel_lab, access=access, config_dir=tmp_path)
    assert [(f.id, f.nodes) for f in findings if f.severity != "info"] == []
    concluded("healthy", access, findings)


@pytest.mark.parametrize("scenario", list(faults.SCENARIOS))
def test_scenario_is_diagnosed_first_on_the_right_node(
    scenario: str, access: str, flannel_lab: Lab, tmp_path: Path
) -> None:
    faults.inject(flannel_lab, scenario, NODE)
    try:
        findings = run_diagnose(flannel_lab, tmp_path / "bundle", access, tmp_path)
    finally:
        faults.undo(flannel_lab, scenario, NODE)
    assert findings, "no findings"
    concluded(scenario, access, findings)
    first = findings[0]
    assert first.id == EXPECTED[scenario], [(f.id, f.nodes) for f in findings]
    assert NODE in first.nodes
    assert first.evidence
    # the same incident, round-tripped through `collect` and read back as `diagnose --dump` does
    offline = diagnose(evidence_from_bundle(tmp_path / "bundle"))
    assert (offline[0].id, NODE in offline[0].nodes) == (first.id, True), [
        (f.id, f.nodes) for f in offline
    ]
