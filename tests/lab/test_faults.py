"""Every seed incident, broken for real, observed over SSH or the API, and restored.

While the whole suite runs, tcpdump listens on the host's uplink for any packet to or from a lab
address; the same filter on the lab bridge proves the filter does see lab traffic.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flannel_bot.executors.ssh import SshExecutor
from flannel_bot.lab import faults
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.network import run
from flannel_bot.lab.nodes import pod_ping
from flannel_bot.lab.topology import NodeSpec
from tests.lab.conftest import SPEC, all_reachable, healthy

pytestmark = pytest.mark.integration
NODE = "w2"
LAB_NETS = ["10.244.0.0/16", "10.245.0.0/16", "10.96.0.0/12", "10.0.2.0/24", SPEC.underlay]
CAPTURE_FILTER = " or ".join(f"net {n}" for n in LAB_NETS)


def uplink() -> str:
    route = run(["ip", "-j", "route", "show", "default"])
    routes = json.loads(route) if route.strip() else []
    return str(routes[0]["dev"]) if routes else "lo"


class Capture:
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.proc = subprocess.Popen(
            ["tcpdump", "-n", "-l", "-i", interface, CAPTURE_FILTER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_started(self) -> None:
        assert self.proc.stderr is not None
        lines = [self.proc.stderr.readline() for _ in range(2)]
        assert any("listening on" in line for line in lines), lines

    def stop(self) -> list[str]:
        time.sleep(0.5)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return [line for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def captures(flannel_lab: Lab) -> Iterator[dict[str, Capture]]:
    caps = {"uplink": Capture(uplink()), "lab": Capture(flannel_lab.spec.bridge)}
    for cap in caps.values():
        cap.wait_started()
    yield caps
    for cap in caps.values():
        if cap.proc.poll() is None:
            cap.proc.kill()


def flannel_log(lab: Lab, node: NodeSpec) -> str:
    pod = lab.flannel_pod_on(node)
    assert pod is not None
    return lab.api.pod_log("kube-flannel", pod["metadata"]["name"], {"container": "kube-flannel"})


def flannel_ready(lab: Lab, node: NodeSpec) -> bool:
    pod = lab.flannel_pod_on(node)
    return bool(pod and pod["status"]["containerStatuses"][0]["ready"])


def events(lab: Lab, text: str) -> list[dict[str, Any]]:
    return [e for e in lab.api.list("events") if text in e["message"]]


def out(ssh: SshExecutor, node: NodeSpec, *argv: str) -> str:
    return ssh.run(node.name, list(argv), timeout=15).stdout


def node_ready(lab: Lab, node: NodeSpec) -> bool:
    api_node = lab.api.get("nodes", node.name)
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in api_node["status"]["conditions"]
    )


def peer(lab: Lab) -> NodeSpec:
    return lab.spec.by_name("w1")


Check = Callable[[Lab, SshExecutor, NodeSpec], None]


def br_netfilter(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    res = ssh.run(n.name, ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"], timeout=15)
    assert res.exit_code != 0 and "No such file or directory" in res.stderr
    assert out(ssh, n, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "0"
    assert (
        "Failed to check br_netfilter: stat /proc/sys/net/bridge/bridge-nf-call-iptables: "
        "no such file or directory" in flannel_log(lab, n)
    )
    assert not flannel_ready(lab, n)


def stale_cni0(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    addrs = out(ssh, n, "ip", "-4", "-br", "addr", "show", "dev", "flannel.1")
    assert "10.245." in addrs and n.vtep_ip in addrs
    assert "10.245." in out(ssh, n, "ip", "-4", "-br", "addr", "show", "dev", "cni0")
    assert "link has incompatible addresses" in flannel_log(lab, n)
    assert events(lab, '"cni0" already has an IP address different from')


def ipam_leak(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    listing = out(ssh, n, "ls", "/var/lib/cni/networks/cbr0")
    assert len([x for x in listing.split() if x.startswith("10.244.")]) == 253
    assert events(lab, "no IP addresses available in range set")
    pending = lab.api.list(
        "pods", "default", field_selector=f"spec.nodeName={n.name},status.phase=Pending"
    )
    assert pending[0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == (
        "ContainerCreating"
    )


def cni_config_missing(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    res = ssh.run(n.name, ["cat", "/etc/cni/net.d/10-flannel.conflist"], timeout=15)
    assert res.exit_code != 0
    assert not node_ready(lab, n)


def cni_config_empty(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert out(ssh, n, "stat", "-c", "%s", "/etc/cni/net.d/10-flannel.conflist").strip() == "0"
    assert not node_ready(lab, n)


def subnet_env_missing(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert ssh.run(n.name, ["test", "-e", "/run/flannel/subnet.env"], timeout=15).exit_code == 1
    assert events(lab, "loadFlannelSubnetEnv failed: open /run/flannel/subnet.env")


def _connect_api(ssh: SshExecutor, n: NodeSpec) -> str:
    res = ssh.run(
        n.name,
        ["timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/10.96.0.1/443 && echo connected"],
        timeout=15,
    )
    return res.stdout + res.stderr + f" exit={res.exit_code}"


def kube_proxy_typo(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    config = lab.api.get("configmaps", "kube-proxy", "kube-system")["data"]["config.conf"]
    assert "masqueradeAl:" in config
    assert "exit=124" in _connect_api(ssh, n)  # timed out, as in the seed
    assert "dial tcp 10.96.0.1:443: i/o timeout" in flannel_log(lab, n)
    proxy = lab.api.list("pods", "kube-system", "k8s-app=kube-proxy", f"spec.nodeName={n.name}")
    log = lab.api.pod_log("kube-system", proxy[0]["metadata"]["name"], {})
    assert 'unknown field \\"iptables.masqueradeAl\\"' in log


def ipvs_local_route(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    local = out(ssh, n, "ip", "route", "show", "table", "local")
    assert "local 10.96.0.1 dev kube-ipvs0" in local
    assert "dial tcp 10.96.0.1:443: i/o timeout" in flannel_log(lab, n)  # as in seed 003


def podcidr_missing(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert "podCIDR" not in lab.api.get("nodes", n.name)["spec"]
    assert f'node "{n.name}" pod cidr not assigned' in flannel_log(lab, n)


def rbac_missing(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert not lab.api.list("clusterrolebindings", field_selector="metadata.name=flannel")
    assert 'User "system:serviceaccount:kube-flannel:flannel" cannot get resource "pods"' in (
        flannel_log(lab, n)
    )


def flannel_missing(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert not lab.api.list("daemonsets", "kube-flannel")
    assert not lab.api.list("pods", "kube-flannel", "app=flannel")
    assert not node_ready(lab, n)


def flannel_uninstalled(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert not [x for x in lab.api.list("namespaces") if x["metadata"]["name"] == "kube-flannel"]
    assert not [x for x in lab.api.list("clusterroles") if x["metadata"]["name"] == "flannel"]
    assert not lab.api.list("pods", "kube-flannel", "app=flannel")
    assert not node_ready(lab, n)


def wrong_iface(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    annotations = lab.api.get("nodes", n.name)["metadata"]["annotations"]
    assert annotations["flannel.alpha.coreos.com/public-ip"] == faults.NAT_ADDRESS
    assert "Using interface with name eth1" in flannel_log(lab, n)
    fdb = out(ssh, peer(lab), "bridge", "fdb", "show", "dev", "flannel.1")
    assert f"{n.vtep_mac} dst {faults.NAT_ADDRESS}" in fdb
    assert not pod_ping(peer(lab), n)


def forward_drop(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert "-P FORWARD DROP" in out(ssh, n, "iptables", "-S", "FORWARD")
    assert not pod_ping(peer(lab), n)


def vxlan_blocked(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert "--dport 8472 -j DROP" in out(ssh, n, "iptables", "-S", "INPUT")
    assert not pod_ping(peer(lab), n)


def fdb_missing(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert out(ssh, n, "bridge", "fdb", "show", "dev", "flannel.1").strip() == ""
    assert not pod_ping(n, peer(lab))


def mtu_mismatch(lab: Lab, ssh: SshExecutor, n: NodeSpec) -> None:
    assert "FLANNEL_MTU=1500" in out(ssh, n, "cat", "/run/flannel/subnet.env")
    assert pod_ping(n, peer(lab), size=56)
    assert not pod_ping(n, peer(lab), size=1472, dont_fragment=True)


SYMPTOMS: dict[str, Check] = {
    "br-netfilter": br_netfilter,
    "stale-cni0": stale_cni0,
    "ipam-leak": ipam_leak,
    "cni-config-missing": cni_config_missing,
    "cni-config-empty": cni_config_empty,
    "subnet-env-missing": subnet_env_missing,
    "kube-proxy-typo": kube_proxy_typo,
    "ipvs-local-route": ipvs_local_route,
    "podcidr-missing": podcidr_missing,
    "rbac-missing": rbac_missing,
    "flannel-missing": flannel_missing,
    "flannel-uninstalled": flannel_uninstalled,
    "wrong-iface": wrong_iface,
    "forward-drop": forward_drop,
    "vxlan-blocked": vxlan_blocked,
    "fdb-missing": fdb_missing,
    "mtu-mismatch": mtu_mismatch,
}


def test_every_scenario_has_a_symptom_check() -> None:
    assert set(SYMPTOMS) == set(faults.SCENARIOS)


@pytest.mark.parametrize("scenario", list(faults.SCENARIOS))
def test_break_observe_restore(
    scenario: str, flannel_lab: Lab, ssh: SshExecutor, captures: dict[str, Capture]
) -> None:
    node = flannel_lab.spec.by_name(NODE)
    faults.inject(flannel_lab, scenario, NODE)
    try:
        SYMPTOMS[scenario](flannel_lab, ssh, node)
    finally:
        faults.undo(flannel_lab, scenario, NODE)
    ready, reach = healthy(flannel_lab)
    assert ready, f"flannel pods not all Ready after restoring {scenario}"
    assert all_reachable(reach), f"pods cannot all reach each other after {scenario}: {reach}"
    assert pod_ping(node, flannel_lab.spec.by_name("w3"), size=1422, dont_fragment=True)


def test_no_lab_packet_left_the_machine(captures: dict[str, Capture]) -> None:
    """Runs after the fault suite in this module (pytest keeps file order)."""
    seen_on_lab = captures["lab"].stop()
    leaked = captures["uplink"].stop()
    assert seen_on_lab, "the capture filter saw no lab traffic even on the lab bridge"
    assert leaked == [], f"lab packets left through {captures['uplink'].interface}: {leaked[:5]}"
