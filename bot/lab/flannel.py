"""Playing flanneld, the bridge CNI plugin and kube-proxy on a lab node.

No flanneld runs in the lab, so when a flannel pod "starts" on a node the lab programs the node
the way flanneld v0.2x does with the VXLAN backend: `/run/flannel/subnet.env`, the CNI config,
`flannel.1` (VNI 1, UDP 8472, nolearning), `cni0`, and for every peer a route
`10.244.P.0/24 via 10.244.P.0 dev flannel.1 onlink`, a permanent neighbour and an FDB entry;
plus flannel's iptables chains and kube-proxy's DNAT for the `kubernetes` Service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import yaml

from flannel_bot.diagnosis.kube_proxy_config import unknown_fields
from flannel_bot.lab.network import API_ENDPOINT_PORT, ip_batch, node_exec, run, write_sysctl
from flannel_bot.lab.topology import (
    API_SERVICE_IP,
    CLUSTER_CIDR,
    VXLAN_ID,
    VXLAN_MTU,
    VXLAN_PORT,
    LabSpec,
    NodeSpec,
)

NET_CONF = {"Network": CLUSTER_CIDR, "EnableNFTables": False, "Backend": {"Type": "vxlan"}}
CNI_CONF = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
CNI_PLUGINS = ("bridge", "flannel", "host-local", "loopback", "portmap")


def subnet_env(node: NodeSpec, mtu: int = VXLAN_MTU) -> str:
    return (
        f"FLANNEL_NETWORK={CLUSTER_CIDR}\n"
        f"FLANNEL_SUBNET={node.gateway}/24\n"
        f"FLANNEL_MTU={mtu}\n"
        "FLANNEL_IPMASQ=true\n"
    )


def write_node_files(node: NodeSpec) -> None:
    """What the install-cni init container and flanneld leave on the host."""
    (node.dir / "run-flannel" / "subnet.env").write_text(subnet_env(node))
    (node.dir / "etc-cni-net.d" / "10-flannel.conflist").write_text(
        json.dumps(CNI_CONF, indent=2) + "\n"
    )
    bin_dir = node.dir / "opt-cni-bin"
    for plugin in CNI_PLUGINS:
        path = bin_dir / plugin
        path.write_text(f"#!/bin/sh\n# lab stand-in for the {plugin} CNI plugin\nexit 0\n")
        path.chmod(0o755)
    write_persistence(node)
    modprobe = node.dir / "usr-local-sbin" / "modprobe"
    modprobe.write_text(MODPROBE_SHIM)
    modprobe.chmod(0o755)


MODPROBE_SHIM = """#!/bin/sh
# lab stand-in for modprobe (first in root's PATH on a lab node). The host kernel has
# br_netfilter built in and cannot unload it, so the br-netfilter scenario hides
# /proc/sys/net/bridge with a bind mount; "loading" the module removes that mount.
# Other modules are reported loaded when the kernel has them, and never loaded for real.
status=0
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    br_netfilter) umount /proc/sys/net/bridge 2>/dev/null || true ;;
    *) if [ ! -e "/sys/module/$arg" ]; then
         echo "modprobe: FATAL: Module $arg not found" >&2; status=1
       fi ;;
  esac
done
exit $status
"""


def write_persistence(node: NodeSpec) -> None:
    """The kubeadm prerequisites a provisioned node carries in /etc/sysctl.d, modules-load.d."""
    (node.dir / "etc-sysctl.d" / "99-kubernetes.conf").write_text(
        "net.bridge.bridge-nf-call-iptables = 1\n"
        "net.bridge.bridge-nf-call-ip6tables = 1\n"
        "net.ipv4.ip_forward = 1\n"
    )
    (node.dir / "etc-modules-load.d" / "k8s.conf").write_text("overlay\nbr_netfilter\n")


def build_data_plane(node: NodeSpec, mtu: int = VXLAN_MTU) -> None:
    """flannel.1 and cni0 with flanneld's addresses; the sysctls Kubernetes nodes need."""
    ip_batch(
        [
            f"link add flannel.1 address {node.vtep_mac} mtu {mtu} type vxlan id {VXLAN_ID} "
            f"local {node.underlay_ip} dev eth0 dstport {VXLAN_PORT} nolearning",
            f"addr add {node.vtep_ip}/32 dev flannel.1",
            "link set flannel.1 up",
            f"link add cni0 mtu {mtu} type bridge",
            f"addr add {node.gateway}/24 dev cni0",
            "link set cni0 up",
        ],
        netns=node.netns,
    )
    write_sysctl(node.netns, "net.ipv4.ip_forward", "1")
    write_sysctl(node.netns, "net.bridge.bridge-nf-call-iptables", "1")
    write_sysctl(node.netns, "net.bridge.bridge-nf-call-ip6tables", "1")


def program_peers(
    node: NodeSpec, nodes: Sequence[NodeSpec], endpoints: Mapping[str, str] | None = None
) -> None:
    """Route, permanent neighbour and FDB entry per peer, as flanneld's lease watcher adds them.

    `endpoints` maps node name to the VTEP address its flannel annotation announces (the
    underlay address unless flanneld picked another interface there).
    """
    ip_lines, fdb_lines = [], []
    for peer in nodes:
        if peer.index == node.index:
            continue
        dst = (endpoints or {}).get(peer.name, peer.underlay_ip)
        ip_lines.append(f"route replace {peer.pod_cidr} via {peer.vtep_ip} dev flannel.1 onlink")
        ip_lines.append(
            f"neigh replace {peer.vtep_ip} lladdr {peer.vtep_mac} dev flannel.1 nud permanent"
        )
        fdb_lines.append(f"fdb replace {peer.vtep_mac} dev flannel.1 dst {dst} self permanent")
    if ip_lines:
        ip_batch(ip_lines, netns=node.netns)
        run(["bridge", "-n", node.netns, "-batch", "-"], input="\n".join(fdb_lines) + "\n")


def has_vxlan(node: NodeSpec) -> bool:
    return run(["ip", "-n", node.netns, "-o", "link", "show", "flannel.1"], check=False) != ""


def write_subnet_env(node: NodeSpec, mtu: int = VXLAN_MTU) -> None:
    (node.dir / "run-flannel" / "subnet.env").write_text(subnet_env(node, mtu))


def write_cni_conf(node: NodeSpec, text: str) -> None:
    (node.dir / "etc-cni-net.d" / "10-flannel.conflist").write_text(text)


def ensure_interfaces(node: NodeSpec, pods: int, mtu: int = VXLAN_MTU) -> None:
    """Recreate flannel.1 and cni0 if they were removed, and put pods back on cni0."""
    links = run(["ip", "-n", node.netns, "-o", "link", "show"])
    if "flannel.1:" not in links:
        ip_batch(
            [
                f"link add flannel.1 address {node.vtep_mac} mtu {mtu} type vxlan id {VXLAN_ID} "
                f"local {node.underlay_ip} dev eth0 dstport {VXLAN_PORT} nolearning",
                f"addr add {node.vtep_ip}/32 dev flannel.1",
                "link set flannel.1 up",
            ],
            netns=node.netns,
        )
    if "cni0:" not in links:
        ip_batch(
            [
                f"link add cni0 mtu {mtu} type bridge",
                f"addr add {node.gateway}/24 dev cni0",
                "link set cni0 up",
            ],
            netns=node.netns,
        )
    ip_batch(
        [f"link set {node.pod_veth(p)} master cni0 up" for p in range(1, pods + 1)],
        netns=node.netns,
    )


def ensure_flannel_iptables(node: NodeSpec) -> None:
    """flanneld's rules, re-made on every start, and "Changing default FORWARD chain policy"."""
    rules = iptables_rules_flannel(node)
    run(["ip", "netns", "exec", node.netns, "iptables-restore", "--noflush"], input=rules)
    run(["ip", "netns", "exec", node.netns, "iptables", "-P", "FORWARD", "ACCEPT"])


def ensure_service_dnat(spec: LabSpec, node: NodeSpec) -> None:
    run(
        ["ip", "netns", "exec", node.netns, "iptables-restore", "--noflush"],
        input=iptables_rules_kube_proxy(spec),
    )


def remove_service_dnat(node: NodeSpec) -> None:
    run(
        ["ip", "netns", "exec", node.netns, "iptables", "-t", "nat", "-F", "KUBE-SERVICES"],
        check=False,
    )


def unknown_kube_proxy_fields(config_text: str) -> list[str]:
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return ["(unparsable YAML)"]
    return unknown_fields(config) if isinstance(config, dict) else ["(not a mapping)"]


_MASQ = '-m comment --comment "flanneld masq"'
_FWD = '-m comment --comment "flanneld forward"'
_PORTALS = '-m comment --comment "kubernetes service portals"'


def iptables_rules_flannel(node: NodeSpec) -> str:
    """flanneld's FLANNEL-FWD and FLANNEL-POSTRTG chains (declaring a chain flushes it)."""
    c = _MASQ
    return "\n".join(
        [
            "*filter",
            ":FLANNEL-FWD - [0:0]",
            f"-A FLANNEL-FWD -s {CLUSTER_CIDR} {_FWD} -j ACCEPT",
            f"-A FLANNEL-FWD -d {CLUSTER_CIDR} {_FWD} -j ACCEPT",
            "COMMIT",
            "*nat",
            ":FLANNEL-POSTRTG - [0:0]",
            f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {node.pod_cidr} -d {CLUSTER_CIDR} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {CLUSTER_CIDR} -d {node.pod_cidr} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {CLUSTER_CIDR} -d {node.pod_cidr} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {CLUSTER_CIDR} ! -d 224.0.0.0/4 {c} "
            "-j MASQUERADE --random-fully",
            f"-A FLANNEL-POSTRTG ! -s {CLUSTER_CIDR} -d {CLUSTER_CIDR} {c} -j MASQUERADE "
            "--random-fully",
            "COMMIT",
            "",
        ]
    )


def iptables_rules_kube_proxy(spec: LabSpec) -> str:
    return "\n".join(
        [
            "*nat",
            ":KUBE-SERVICES - [0:0]",
            f"-A KUBE-SERVICES -d {API_SERVICE_IP}/32 -p tcp -m comment --comment "
            '"default/kubernetes:https cluster IP" -m tcp --dport 443 '
            f"-j DNAT --to-destination {spec.svc_ip}:{API_ENDPOINT_PORT}",
            "COMMIT",
            "",
        ]
    )


def iptables_base() -> str:
    """Built-in chains with the jumps into flannel's and kube-proxy's chains."""
    return "\n".join(
        [
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":FORWARD ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":FLANNEL-FWD - [0:0]",
            f"-A FORWARD {_FWD} -j FLANNEL-FWD",
            "COMMIT",
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
            ":FLANNEL-POSTRTG - [0:0]",
            ":KUBE-SERVICES - [0:0]",
            f"-A PREROUTING {_PORTALS} -j KUBE-SERVICES",
            f"-A OUTPUT {_PORTALS} -j KUBE-SERVICES",
            f"-A POSTROUTING {_MASQ} -j FLANNEL-POSTRTG",
            "COMMIT",
            "",
        ]
    )


def program_iptables(spec: LabSpec, node: NodeSpec) -> None:
    run(["ip", "netns", "exec", node.netns, "iptables-restore"], input=iptables_base())
    ensure_flannel_iptables(node)
    ensure_service_dnat(spec, node)


def api_reachable(node: NodeSpec, timeout: float = 2.0) -> bool:
    """What flanneld's first API call needs: a TCP connect to 10.96.0.1:443 from the node."""
    out = node_exec(
        node,
        [
            "timeout",
            str(timeout),
            "bash",
            "-c",
            f"exec 3<>/dev/tcp/{API_SERVICE_IP}/443 && echo ok",
        ],
        check=False,
    )
    return out.strip() == "ok"
