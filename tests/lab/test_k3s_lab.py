"""A k3s lab: flannel embedded in k3s (no DaemonSet, pods or ConfigMap), diagnosed the way a user
runs `flannel-bot diagnose`. Healthy, the bot finds nothing; each embedded-flannel fault is named
first on its node and no finding offers `flannel.repair`; undone, the lab is healthy again; and
`run flannel.repair` is refused on k3s. A session lab of its own (2 nodes, its own underlay and
root), built once. tcpdump on the host's uplink meanwhile sees no packet of a lab address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.executors.ssh import SshExecutor
from flannel_bot.lab import faults, k3s
from flannel_bot.lab.flannel import subnet_env
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.network import in_netns, lab_links, lab_netns, lab_pids, run
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.probes import BY_ID
from tests.lab.conftest import (
    ACCESS,
    all_reachable,
    bot_config,
    internal_ip,
    node_exec_pods,
    running_lab,
    ssh_settings,
)

pytestmark = pytest.mark.integration
SPEC = LabSpec(
    name="tk",
    nodes=2,
    underlay="172.31.249.0/24",
    root=Path("/run/flannel-bot-test-k3s"),
    distribution="k3s",
)
FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")
NODE = "w2"
KUBELET_DOWN = {"k3s-iface-missing"}  # k3s does not start, so neither does its kubelet
EXPECTED = {
    "k3s-iface-missing": "interface-not-found",
    "k3s-stale-cni0": "stale-interface-address",
    "k3s-portmap-missing": "cni-plugin-missing",
    "k3s-bridge-missing": "cni-plugin-missing",
}
# the bot reads the last hour of the k3s journal; a test starts after earlier tests' lines
LATER = 2 * 3600
OTHER = LabSpec(name="tkc", nodes=2, underlay="172.31.247.0/24", root=SPEC.root)
LAB_NETS = ("10.244.0.0/16", "10.245.0.0/16", "10.96.0.0/12", SPEC.underlay, OTHER.underlay)


class Capture:
    """tcpdump on an interface for packets to or from the lab's addresses."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.proc = subprocess.Popen(
            ["tcpdump", "-n", "-l", "-i", interface, " or ".join(f"net {n}" for n in LAB_NETS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        started = [self.proc.stderr.readline() for _ in range(2)]
        assert any("listening on" in line for line in started), started

    def stop(self) -> list[str]:
        time.sleep(0.5)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return [line for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def captures(k3s_lab: Lab) -> Iterator[dict[str, Capture]]:
    routes = json.loads(run(["ip", "-j", "route", "show", "default"]) or "[]")
    caps = {
        "uplink": Capture(str(routes[0]["dev"]) if routes else "lo"),
        "lab": Capture(k3s_lab.spec.bridge),
    }
    yield caps
    for cap in caps.values():
        if cap.proc.poll() is None:
            cap.proc.kill()


@pytest.fixture(scope="session")
def k3s_lab() -> Iterator[Lab]:
    yield from running_lab(SPEC)


@pytest.fixture
def ssh(k3s_lab: Lab) -> Iterator[SshExecutor]:
    addresses = internal_ip(k3s_lab)
    with SshExecutor(ssh_settings(k3s_lab), resolve=addresses.__getitem__) as executor:
        yield executor


# k3s down on a node takes its kubelet with it: a node-exec pod there never starts, so the
# bot waits this long for it (`[nodes] start_timeout`) and says so instead of probing the node
POD_START_TIMEOUT = 8


@pytest.fixture(params=ACCESS)
def access(request: pytest.FixtureRequest, k3s_lab: Lab) -> Iterator[str]:
    """Over SSH and over node-exec pods; a pod-transport test leaves no node-exec pod behind."""
    yield str(request.param)
    assert node_exec_pods(k3s_lab) == [], "node-exec pods left behind"


def bot(lab: Lab, db: Path, *args: str, access: str = "ssh") -> dict[str, Any]:
    """One `flannel-bot --json ...` as a user runs it, pointed at the lab's generated config
    (reaching nodes over `access`)."""
    config = bot_config(lab, access, db.parent)
    if access == "pod":
        config.write_text(f"{config.read_text()}start_timeout = {POD_START_TIMEOUT}\n")
    env = {**os.environ, "FLANNEL_BOT_CONFIG": str(config), "FLANNEL_BOT_DB": str(db)}
    proc = subprocess.run(
        [FLANNEL_BOT, "--json", "--user", "alice", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip(), proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


def diagnose(lab: Lab, tmp_path: Path, access: str = "ssh") -> list[dict[str, Any]]:
    reply = diagnose_reply(lab, tmp_path, access)
    assert reply["summary"]["probed"] == lab.spec.nodes, reply["gaps"]
    findings: list[dict[str, Any]] = reply["findings"]
    return findings


def diagnose_reply(lab: Lab, tmp_path: Path, access: str = "ssh") -> dict[str, Any]:
    reply = bot(lab, tmp_path / "bot.db", "diagnose", access=access)
    assert reply["ok"], reply
    return reply


def seen(findings: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    return [(f["id"], f["severity"], f["nodes"]) for f in findings]


def offers_repair(finding: dict[str, Any]) -> bool:
    fix = finding["fix"]
    said = " ".join(str(fix.get(k) or "") for k in ("runbook", "command", "then"))
    return "flannel.repair" in said


def lab_is_healthy(lab: Lab) -> None:
    """Flannel up on the node as k3s leaves it, pods reaching each other, nothing stuck."""
    node = lab.spec.by_name(NODE)
    assert all_reachable(lab.status()["pod_reachability"]), lab.status()["pod_reachability"]
    ready = {c["type"]: c["status"] for c in lab.api.get("nodes", NODE)["status"]["conditions"]}
    assert ready["Ready"] == "True", ready
    assert node.private("/run/flannel/subnet.env").read_text() == subnet_env(node)
    cni0 = json.loads(in_netns(node.netns, ["ip", "-j", "addr", "show", "dev", "cni0"]))
    assert [f"{a['local']}/{a['prefixlen']}" for a in cni0[0]["addr_info"]] == [
        f"{node.gateway}/24"
    ]
    assert {p.name for p in node.cni_bin.iterdir()} == {*k3s.CNI_LINKS, "cni", *k3s.OTHER_BINARIES}
    pending = lab.api.list("pods", "default", field_selector="status.phase=Pending")
    assert pending == []
    assert "--flannel-cni-conf" not in lab.k3s_args(node)


def test_every_k3s_scenario_has_an_expected_finding() -> None:
    assert set(EXPECTED) == set(faults.K3S_SCENARIOS)


def test_the_lab_shows_k3s_with_its_flannel_embedded(k3s_lab: Lab) -> None:
    api = k3s_lab.api
    assert [d["metadata"]["name"] for d in api.list("daemonsets")] == []
    assert api.list("pods", "kube-system") == []
    assert api.list("configmaps", "kube-system") == []
    nodes = {n["metadata"]["name"]: n for n in api.list("nodes")}
    info = nodes["w1"]["status"]["nodeInfo"]
    assert (info["kubeletVersion"], info["containerRuntimeVersion"]) == (
        "v1.30.4+k3s1",
        "containerd://1.7.20-k3s1",
    )
    ann = {name: n["metadata"]["annotations"] for name, n in nodes.items()}
    assert json.loads(ann["w1"]["k3s.io/node-args"])[0] == "server"
    assert json.loads(ann["w2"]["k3s.io/node-args"]) == ["agent", "--flannel-iface", "eth0"]
    assert ann["w2"]["flannel.alpha.coreos.com/backend-type"] == "vxlan"
    assert ann["w2"]["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"
    assert ann["w2"]["flannel.alpha.coreos.com/public-ip"] == SPEC.node(2).underlay_ip


def test_nodes_answer_the_k3s_probes(k3s_lab: Lab, ssh: SshExecutor) -> None:
    def probe(probe_id: str, node: str = NODE) -> tuple[int, str]:
        result = ssh.run(node, BY_ID[probe_id].argv, 10)
        return result.exit_code, result.stdout

    code, journal = probe("k3s-journal")
    assert code == 0
    assert 'level=info msg="Starting flannel with backend vxlan"' in journal
    assert "Running flannel backend." in journal
    assert f" {NODE} k3s[" in journal.splitlines()[0]
    assert probe("kubelet-journal") == (0, "-- No entries --\n")
    assert "cni0: port 1(" in probe("kernel-log")[1]
    code, conf = probe("k3s-cni-config")
    assert code == 0 and "10-flannel.conflist" in conf and '"forceAddress":true' in conf
    assert {"bridge", "flannel", "host-local", "portmap"} <= set(probe("k3s-cni-bin")[1].split())
    assert json.loads(probe("k3s-flannel-conf")[1])["Network"] == "10.244.0.0/16"
    assert probe("cni-config")[0] != 0  # k3s has no /etc/cni/net.d
    assert probe("cni-bin")[0] != 0  # nor /opt/cni/bin


def test_journal_window_holds_only_the_last_hour(k3s_lab: Lab, ssh: SshExecutor) -> None:
    k3s_lab.age_journals(LATER)
    argv = BY_ID["k3s-journal"].argv
    assert ssh.run("w1", argv, 10).stdout == "-- No entries --\n"
    assert "Running flannel backend." in k3s_lab.restart_k3s(k3s_lab.spec.by_name("w1")).log
    assert "Running flannel backend." in ssh.run("w1", argv, 10).stdout


def test_healthy_k3s_lab_has_no_warnings(k3s_lab: Lab, access: str, tmp_path: Path) -> None:
    k3s_lab.age_journals(LATER)
    findings = diagnose(k3s_lab, tmp_path, access)
    assert "flannel-not-deployed" not in {f["id"] for f in findings}
    assert [x for x in seen(findings) if x[1] != "info"] == []


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_fault_is_named_first_and_repair_never_offered(
    scenario: str, access: str, k3s_lab: Lab, tmp_path: Path
) -> None:
    k3s_lab.age_journals(LATER)
    faults.inject(k3s_lab, scenario, NODE)
    try:
        if access == "pod" and scenario in KUBELET_DOWN:
            reply = diagnose_reply(k3s_lab, tmp_path, access)
        else:
            findings = diagnose(k3s_lab, tmp_path, access)
    finally:
        faults.undo(k3s_lab, scenario, NODE)
    if access == "pod" and scenario in KUBELET_DOWN:
        # no kubelet runs a pod there: the bot says it could not reach the node, and why
        assert reply["summary"]["probed"] == k3s_lab.spec.nodes - 1, reply["summary"]
        said = json.dumps(reply)
        assert f"node {NODE}" in said and "did not start within" in said, said[:2000]
        assert "is the node's kubelet running?" in said, said[:2000]
        return
    assert findings, "no findings"
    first = findings[0]
    assert (first["id"], NODE in first["nodes"]) == (EXPECTED[scenario], True), seen(findings)
    assert first["evidence"]
    assert [f["id"] for f in findings if offers_repair(f)] == []
    healthy = [x for x in seen(findings) if x[1] != "info" and NODE not in x[2]]
    assert healthy == [], "a finding on a node the fault did not touch"
    if EXPECTED[scenario] == "cni-plugin-missing":  # names the plugin gone, and only that one
        plugin = scenario.removeprefix("k3s-").removesuffix("-missing")
        assert first["summary"].endswith(f": {plugin}"), first["summary"]


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_undo_brings_the_lab_back_to_healthy(scenario: str, k3s_lab: Lab, tmp_path: Path) -> None:
    faults.inject(k3s_lab, scenario, NODE)
    faults.undo(k3s_lab, scenario, NODE)
    lab_is_healthy(k3s_lab)
    k3s_lab.age_journals(LATER)  # what k3s logged while broken is past the bot's window
    assert [x for x in seen(diagnose(k3s_lab, tmp_path)) if x[1] != "info"] == []


def test_right_after_the_fix_the_old_cause_is_not_reported(k3s_lab: Lab, tmp_path: Path) -> None:
    k3s_lab.age_journals(LATER)
    faults.inject(k3s_lab, "k3s-iface-missing", NODE)
    faults.undo(k3s_lab, "k3s-iface-missing", NODE)
    lab_is_healthy(k3s_lab)
    assert [x for x in seen(diagnose(k3s_lab, tmp_path)) if x[1] != "info"] == []


def test_lab_command_up_break_down_leaves_nothing(k3s_lab: Lab, ssh: SshExecutor) -> None:
    """`flannel-bot lab up --distribution k3s` ... `lab down`, beside the session's k3s lab,
    which keeps its nodes' private /var/lib/rancher throughout."""
    other = OTHER  # a second lab: its own name and underlay, the same root

    def lab(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [FLANNEL_BOT, "lab", "--name", other.name, "--root", str(other.root), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    try:
        up = lab("up", "--nodes", "2", "--underlay", other.underlay, "--distribution", "k3s")
        assert up.returncode == 0 and "2 k3s nodes" in up.stdout, up.stdout + up.stderr
        broke = lab("break", "k3s-iface-missing", "--node", "w2")
        assert broke.returncode == 0 and "unable to find interface eth0" in broke.stdout
        assert "w1:FAIL" in lab("status").stdout
        kubeadm_only = lab("break", "stale-cni0", "--node", "w2")
        assert kubeadm_only.returncode == 1 and "not a scenario of a k3s lab" in kubeadm_only.stderr
    finally:
        down = lab("down")
    assert down.returncode == 0, down.stdout + down.stderr
    left = (lab_netns(other), lab_links(other), lab_pids(other), other.dir.exists())
    assert left == ([], [], [], False)
    assert "portmap" in ssh.run(NODE, BY_ID["k3s-cni-bin"].argv, 10).stdout


def test_flannel_repair_is_refused_on_k3s(k3s_lab: Lab, tmp_path: Path) -> None:
    reply = bot(k3s_lab, tmp_path / "bot.db", "run", "flannel.repair")
    assert (reply["ok"], reply["kind"]) == (False, "error"), reply
    assert "k3s" in reply["message"], reply["message"]
    # nothing of kube-flannel.yml was created beside k3s's own flannel
    assert k3s_lab.api.list("daemonsets") == []
    names = {n["metadata"]["name"] for n in k3s_lab.api.list("namespaces")}
    assert "kube-flannel" not in names


def test_no_lab_packet_left_the_machine(captures: dict[str, Capture]) -> None:
    """Last in the module: everything above ran while tcpdump listened."""
    seen_on_lab = captures["lab"].stop()
    leaked = captures["uplink"].stop()
    assert seen_on_lab, "the capture filter saw no lab traffic even on the lab bridge"
    assert leaked == [], f"lab packets left through {captures['uplink'].interface}: {leaked[:5]}"
