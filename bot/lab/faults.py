"""The seed incidents, injected for real into a running lab, and undone.

Each scenario changes the node (over its namespaces) and what the API shows (logs, events, pod and
node status) the way the real incident does, mostly by breaking the cause and then letting the lab's
flanneld / kube-proxy restart run into it. `restore` removes the cause and restarts what the real
fix would restart. Where this kernel cannot reproduce an incident exactly, `note` says how close
the lab gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.lab import flannel, objects
from bot.lab.apiserver import StatusError
from bot.lab.lab import Lab, flush_pod_route_cache
from bot.lab.network import in_netns, ip_batch, node_exec, run, write_sysctl
from bot.lab.nodes import sandbox_id, write_ipam
from bot.lab.objects import FLANNEL_DS, FLANNEL_NS
from bot.lab.topology import API_SERVICE_IP, VXLAN_MTU, VXLAN_PORT, NodeSpec

NAT_ADDRESS = "10.0.2.15"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    inject: Callable[[Lab, NodeSpec], None]
    undo: Callable[[Lab, NodeSpec], None]
    cluster_wide: bool = False
    note: str = ""


# -- br_netfilter ---------------------------------------------------------------------------------


def _hide_bridge_sysctls(lab: Lab, node: NodeSpec) -> None:
    write_sysctl(node.netns, "net.bridge.bridge-nf-call-iptables", "0")
    write_sysctl(node.netns, "net.bridge.bridge-nf-call-ip6tables", "0")
    write_sysctl(node.netns, "net.ipv4.ip_forward", "0")
    (node.dir / "etc-sysctl.d" / "99-kubernetes.conf").unlink(missing_ok=True)
    (node.dir / "etc-modules-load.d" / "k8s.conf").unlink(missing_ok=True)
    empty = node.dir / "no-br-netfilter"
    empty.mkdir(exist_ok=True)
    node_exec(node, ["mount", "--bind", str(empty), "/proc/sys/net/bridge"])
    lab.restart_flannel(node)


def _show_bridge_sysctls(lab: Lab, node: NodeSpec) -> None:
    node_exec(node, ["umount", "/proc/sys/net/bridge"], check=False)
    write_sysctl(node.netns, "net.bridge.bridge-nf-call-iptables", "1")
    write_sysctl(node.netns, "net.bridge.bridge-nf-call-ip6tables", "1")
    write_sysctl(node.netns, "net.ipv4.ip_forward", "1")
    flannel.write_persistence(node)
    lab.restart_flannel(node)


# -- stale interfaces after kubeadm reset ----------------------------------------------------------


def _stale_addresses(lab: Lab, node: NodeSpec) -> None:
    old = f"10.245.{node.index}"
    ip_batch(
        [
            "addr flush dev cni0",
            f"addr add {old}.1/24 dev cni0",
            f"addr add {old}.0/32 dev flannel.1",
        ],
        netns=node.netns,
    )
    lab.restart_flannel(node)
    _pending_pod(
        lab,
        node,
        "FailedCreatePodSandBox",
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup "
        f'network for sandbox "{sandbox_id(node, 99)}": plugin type="flannel" failed '
        '(add): failed to delegate add: failed to set bridge addr: "cni0" already has '
        f"an IP address different from {node.gateway}/24",
    )


def _fresh_addresses(lab: Lab, node: NodeSpec) -> None:
    ip_batch(
        [
            "addr flush dev cni0",
            f"addr add {node.gateway}/24 dev cni0",
            "addr flush dev flannel.1",
            f"addr add {node.vtep_ip}/32 dev flannel.1",
        ],
        netns=node.netns,
    )
    flannel.program_peers(node, lab.spec.all_nodes(), lab.peer_addresses())
    _delete_pending(lab, node)
    lab.restart_flannel(node)


# -- host-local IPAM leak -------------------------------------------------------------------------


def _leak_ips(lab: Lab, node: NodeSpec) -> None:
    net = node.dir / "var-lib-cni" / "networks" / "cbr0"
    used = {p.name for p in net.iterdir()}
    for host in range(2, 255):
        ip = f"10.244.{node.index}.{host}"
        if ip not in used:
            (net / ip).write_text(f"{sandbox_id(node, 1000 + host)}\neth0")
    (net / "last_reserved_ip.0").write_text(f"10.244.{node.index}.254")
    _pending_pod(
        lab,
        node,
        "FailedCreatePodSandBox",
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup "
        f'network for sandbox "{sandbox_id(node, 99)}": plugin type="flannel" failed '
        "(add): failed to delegate add: failed to allocate for range 0: no IP addresses "
        f"available in range set: 10.244.{node.index}.1-10.244.{node.index}.254",
    )


def _release_ips(lab: Lab, node: NodeSpec) -> None:
    write_ipam(node, lab.spec.pods_per_node)
    _delete_pending(lab, node)


# -- CNI config and subnet.env ---------------------------------------------------------------------


def _remove_cni_config(lab: Lab, node: NodeSpec) -> None:
    (node.dir / "etc-cni-net.d" / "10-flannel.conflist").unlink(missing_ok=True)
    _node_not_ready(lab, node, "cni config uninitialized")


def _empty_cni_config(lab: Lab, node: NodeSpec) -> None:
    (node.dir / "etc-cni-net.d" / "10-flannel.conflist").write_text("")
    _node_not_ready(lab, node, "cni config uninitialized")


def _restore_cni_config(lab: Lab, node: NodeSpec) -> None:
    cfg = lab.api.get("configmaps", "kube-flannel-cfg", FLANNEL_NS)["data"]["cni-conf.json"]
    flannel.write_cni_conf(node, cfg)
    _node_ready(lab, node)


def _remove_subnet_env(lab: Lab, node: NodeSpec) -> None:
    (node.dir / "run-flannel" / "subnet.env").unlink(missing_ok=True)
    _pending_pod(
        lab,
        node,
        "FailedCreatePodSandBox",
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup "
        f'network for sandbox "{sandbox_id(node, 99)}": plugin type="flannel" failed '
        "(add): loadFlannelSubnetEnv failed: open /run/flannel/subnet.env: no such file "
        "or directory",
    )


def _restore_subnet_env(lab: Lab, node: NodeSpec) -> None:
    _delete_pending(lab, node)
    lab.restart_flannel(node)


# -- kube-proxy ------------------------------------------------------------------------------------


def _rewrite_kube_proxy_config(lab: Lab, old: str, new: str) -> None:
    """Edit kube-proxy's ConfigMap, then restart kube-proxy and flannel everywhere (the seed's
    order: kube-proxy first, then the flannel pods that could not reach the API)."""
    cm = lab.api.get("configmaps", "kube-proxy", "kube-system")
    text = cm["data"]["config.conf"].replace(old, new)
    lab.api.patch(
        "configmaps", "kube-proxy", {"data": {"config.conf": text}}, "kube-system", "merge"
    )
    for n in lab.spec.all_nodes():
        lab.restart_kube_proxy(n)
    for n in lab.spec.all_nodes():
        lab.restart_flannel(n)


def _kube_proxy_typo(lab: Lab, node: NodeSpec) -> None:
    _rewrite_kube_proxy_config(lab, "masqueradeAll:", "masqueradeAl:")


def _kube_proxy_fixed(lab: Lab, node: NodeSpec) -> None:
    _rewrite_kube_proxy_config(lab, "masqueradeAl:", "masqueradeAll:")


def _ipvs_local_route(lab: Lab, node: NodeSpec) -> None:
    ip_batch(
        [
            "link add kube-ipvs0 type bridge",
            f"addr add {API_SERVICE_IP}/32 dev kube-ipvs0",
            f"route replace local {API_SERVICE_IP} dev kube-ipvs0 table local proto kernel "
            f"scope host src {API_SERVICE_IP}",
        ],
        netns=node.netns,
    )
    lab.restart_flannel(node)


def _no_ipvs_local_route(lab: Lab, node: NodeSpec) -> None:
    ip_batch(["link delete kube-ipvs0"], netns=node.netns)
    lab.restart_flannel(node)


# -- API-side faults -------------------------------------------------------------------------------


def _drop_pod_cidr(lab: Lab, node: NodeSpec) -> None:
    lab.api.patch(
        "nodes",
        node.name,
        [{"op": "remove", "path": "/spec/podCIDR"}, {"op": "remove", "path": "/spec/podCIDRs"}],
        patch_type="json",
    )
    lab.restart_flannel(node)


def _give_pod_cidr(lab: Lab, node: NodeSpec) -> None:
    lab.api.patch(
        "nodes",
        node.name,
        {"spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]}},
        patch_type="merge",
    )
    lab.restart_flannel(node)


def _drop_rbac(lab: Lab, node: NodeSpec) -> None:
    lab.api.delete("clusterrolebindings", "flannel")
    lab.api.delete("clusterroles", "flannel")
    for n in lab.spec.all_nodes():
        lab.restart_flannel(n)


def _restore_rbac(lab: Lab, node: NodeSpec) -> None:
    for obj in objects.rbac_objects()[1:]:
        lab.api.create(obj)
    for n in lab.spec.all_nodes():
        lab.restart_flannel(n)


def _delete_flannel(lab: Lab, node: NodeSpec) -> None:
    lab.api.delete("daemonsets", FLANNEL_DS, FLANNEL_NS)
    for pod in lab.api.list("pods", FLANNEL_NS, "app=flannel"):
        lab.api.delete("pods", pod["metadata"]["name"], FLANNEL_NS)
    for n in lab.spec.all_nodes():
        (n.dir / "etc-cni-net.d" / "10-flannel.conflist").unlink(missing_ok=True)
        _node_not_ready(lab, n, "cni plugin not initialized")


def _reinstall_flannel(lab: Lab, node: NodeSpec) -> None:
    lab.api.create(objects.flannel_daemonset(lab.spec.nodes))  # the lab's controller adds pods
    lab.settle()


def _uninstall_flannel(lab: Lab, node: NodeSpec) -> None:
    """`kubectl delete -f kube-flannel.yml`: the namespace with all in it, and flannel's RBAC."""
    lab.api.delete("clusterrolebindings", "flannel")
    lab.api.delete("clusterroles", "flannel")
    lab.api.delete("namespaces", FLANNEL_NS)
    for n in lab.spec.all_nodes():
        (n.dir / "etc-cni-net.d" / "10-flannel.conflist").unlink(missing_ok=True)
        _node_not_ready(lab, n, "cni plugin not initialized")


def _install_flannel(lab: Lab, node: NodeSpec) -> None:
    """`kubectl apply -f kube-flannel.yml`: whatever is missing is created; pods follow."""
    for obj in (
        objects.namespace(FLANNEL_NS),
        *objects.rbac_objects(),
        objects.flannel_configmap(),
        objects.flannel_daemonset(lab.spec.nodes),
    ):
        try:
            lab.api.create(obj)
        except StatusError as exc:
            if exc.code != 409:  # already there (a runbook may have put it back)
                raise
    lab.settle()


def _wrong_iface(lab: Lab, node: NodeSpec) -> None:
    ip_batch(
        [
            "link add eth1 type veth peer name eth1-nat",
            f"addr add {NAT_ADDRESS}/24 dev eth1",
            "link set eth1 up",
            "link set eth1-nat up",
        ],
        netns=node.netns,
    )
    lab.restart_flannel(node)


def _right_iface(lab: Lab, node: NodeSpec) -> None:
    ip_batch(["link delete eth1"], netns=node.netns)
    lab.restart_flannel(node)


# -- data-plane faults -----------------------------------------------------------------------------


def _forward_drop(lab: Lab, node: NodeSpec) -> None:
    in_netns(node.netns, ["iptables", "-P", "FORWARD", "DROP"])
    in_netns(node.netns, ["iptables", "-F", "FLANNEL-FWD"])


def _forward_accept(lab: Lab, node: NodeSpec) -> None:
    flannel.ensure_flannel_iptables(node)


def _block_vxlan(lab: Lab, node: NodeSpec) -> None:
    for chain in ("INPUT", "OUTPUT"):
        in_netns(
            node.netns,
            ["iptables", "-I", chain, "-p", "udp", "--dport", str(VXLAN_PORT), "-j", "DROP"],
        )


def _unblock_vxlan(lab: Lab, node: NodeSpec) -> None:
    for chain in ("INPUT", "OUTPUT"):
        in_netns(
            node.netns,
            ["iptables", "-D", chain, "-p", "udp", "--dport", str(VXLAN_PORT), "-j", "DROP"],
            check=False,
        )


def _drop_fdb(lab: Lab, node: NodeSpec) -> None:
    for peer in lab.spec.all_nodes():
        if peer.index != node.index:
            run(
                ["bridge", "-n", node.netns, "fdb", "del", peer.vtep_mac, "dev", "flannel.1"],
                check=False,
            )


def _restore_fdb(lab: Lab, node: NodeSpec) -> None:
    flannel.program_peers(node, lab.spec.all_nodes(), lab.peer_addresses())


def _mtu_mismatch(lab: Lab, node: NodeSpec) -> None:
    flannel.write_subnet_env(node, mtu=1500)
    ip_batch(
        [
            "link set cni0 mtu 1500",
            *(
                f"link set {node.pod_veth(p)} mtu 1500"
                for p in range(1, lab.spec.pods_per_node + 1)
            ),
        ],
        netns=node.netns,
    )
    for p in range(1, lab.spec.pods_per_node + 1):
        ip_batch(["link set eth0 mtu 1500"], netns=node.pod_netns(p))


def _mtu_match(lab: Lab, node: NodeSpec) -> None:
    flannel.write_subnet_env(node, mtu=VXLAN_MTU)
    for p in range(1, lab.spec.pods_per_node + 1):
        ip_batch(["link set eth0 mtu 1450"], netns=node.pod_netns(p))
    ip_batch(
        [
            *(
                f"link set {node.pod_veth(p)} mtu {VXLAN_MTU}"
                for p in range(1, lab.spec.pods_per_node + 1)
            ),
            f"link set cni0 mtu {VXLAN_MTU}",
        ],
        netns=node.netns,
    )
    flush_pod_route_cache(lab)


# -- helpers ---------------------------------------------------------------------------------------


def _pending_pod(lab: Lab, node: NodeSpec, reason: str, message: str) -> None:
    """A new pod (fresh name, as a ReplicaSet would make) stuck waiting for its sandbox."""
    name = f"web-{node.name}-{objects.suffix(node.name, time.time_ns())}"
    pod = objects.workload_pod(node, 99)
    pod["metadata"]["name"] = name
    pod["status"] = objects.pod_status(node, False, 0, host_network=False, phase="Pending")
    pod["status"]["containerStatuses"] = [
        {
            **objects.container_status("web", "registry.k8s.io/pause:3.9", False, 0),
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }
    ]
    lab.api.create(pod)
    lab.api.create(objects.event("default", "Pod", name, reason, message, host=node.name))


def _delete_pending(lab: Lab, node: NodeSpec) -> None:
    for pod in lab.api.list(
        "pods", "default", field_selector=f"spec.nodeName={node.name},status.phase=Pending"
    ):
        lab.api.delete("pods", pod["metadata"]["name"], "default")


def _node_not_ready(lab: Lab, node: NodeSpec, why: str) -> None:
    conds = objects.node_conditions(False, True)
    conds[1]["message"] = (
        "container runtime network not ready: NetworkReady=false reason:"
        f"NetworkPluginNotReady message:Network plugin returns error: {why}"
    )
    lab.api.patch(
        "nodes",
        node.name,
        {"status": {"conditions": conds}},
        patch_type="merge",
        subresource="status",
    )
    lab.api.create(
        objects.event(
            "default",
            "Node",
            node.name,
            "NetworkNotReady",
            f"network is not ready: {conds[1]['message']}",
            host=node.name,
        )
    )


def _node_ready(lab: Lab, node: NodeSpec) -> None:
    lab.api.patch(
        "nodes",
        node.name,
        {"status": {"conditions": objects.node_conditions(True, True)}},
        patch_type="merge",
        subresource="status",
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "br-netfilter",
            "bridge sysctls absent and ip_forward=0; flannel crash-loops with "
            "`Failed to check br_netfilter`",
            _hide_bridge_sysctls,
            _show_bridge_sysctls,
            note="br_netfilter is built into this kernel and cannot be unloaded: the lab hides "
            "/proc/sys/net/bridge in the node's mount namespace, which is what flanneld and a "
            "probe see, and a lab `modprobe` in /usr/local/sbin removes that mount",
        ),
        Scenario(
            "stale-cni0",
            "cni0/flannel.1 carry addresses from another /16 (after kubeadm "
            "reset); flannel fails with `link has incompatible addresses`, new pods fail",
            _stale_addresses,
            _fresh_addresses,
        ),
        Scenario(
            "ipam-leak",
            "host-local reservations fill the node's range for containers that no "
            "longer exist; a new pod sticks in ContainerCreating with `no IP addresses "
            "available`",
            _leak_ips,
            _release_ips,
            note="there is no container runtime: the lab's reservations name sandbox ids no "
            "pod has",
        ),
        Scenario(
            "cni-config-missing",
            "/etc/cni/net.d/10-flannel.conflist removed; node NotReady",
            _remove_cni_config,
            _restore_cni_config,
        ),
        Scenario(
            "cni-config-empty",
            "/etc/cni/net.d/10-flannel.conflist empty; node NotReady",
            _empty_cni_config,
            _restore_cni_config,
        ),
        Scenario(
            "subnet-env-missing",
            "/run/flannel/subnet.env removed; new pods fail with `loadFlannelSubnetEnv failed`",
            _remove_subnet_env,
            _restore_subnet_env,
        ),
        Scenario(
            "kube-proxy-typo",
            "kube-proxy config has `masqueradeAl`; kube-proxy fails strict "
            "decoding, 10.96.0.1:443 times out from nodes, flannel crash-loops",
            _kube_proxy_typo,
            _kube_proxy_fixed,
            cluster_wide=True,
        ),
        Scenario(
            "ipvs-local-route",
            "`local 10.96.0.1 dev kube-ipvs0` in table local: connects to the API service "
            "leave with source 10.96.0.1, replies never return (i/o timeout); flannel "
            "crash-loops",
            _ipvs_local_route,
            _no_ipvs_local_route,
            note="no IPVS in this kernel and no dummy links: kube-ipvs0 is a bridge and there "
            "are no virtual servers; the stale local route does the damage",
        ),
        Scenario(
            "podcidr-missing",
            "the Node has no spec.podCIDR; flannel crash-loops with `pod cidr not assigned`",
            _drop_pod_cidr,
            _give_pod_cidr,
        ),
        Scenario(
            "rbac-missing",
            "ClusterRole/ClusterRoleBinding `flannel` deleted; flannel "
            "crash-loops with `forbidden`",
            _drop_rbac,
            _restore_rbac,
            cluster_wide=True,
        ),
        Scenario(
            "flannel-missing",
            "no flannel DaemonSet (never applied or deleted); nodes NotReady",
            _delete_flannel,
            _reinstall_flannel,
            cluster_wide=True,
        ),
        Scenario(
            "flannel-uninstalled",
            "kube-flannel.yml deleted: no kube-flannel namespace (DaemonSet, ConfigMap, "
            "ServiceAccount, pods) and no flannel ClusterRole/Binding; nodes NotReady",
            _uninstall_flannel,
            _install_flannel,
            cluster_wide=True,
        ),
        Scenario(
            "wrong-iface",
            f"a NAT-like second NIC eth1 ({NAT_ADDRESS}) wins flanneld's "
            "interface choice; peers send VXLAN to an address they cannot reach",
            _wrong_iface,
            _right_iface,
            note="a lab node has no default route; eth1 stands for the NAT interface that "
            "carries it on a VirtualBox/Vagrant node",
        ),
        Scenario(
            "forward-drop",
            "iptables FORWARD policy DROP without flannel's FLANNEL-FWD accepts; "
            "cross-node pod traffic is dropped",
            _forward_drop,
            _forward_accept,
        ),
        Scenario(
            "vxlan-blocked",
            "UDP 8472 dropped on the node; cross-node pod traffic to and from it is lost",
            _block_vxlan,
            _unblock_vxlan,
        ),
        Scenario(
            "fdb-missing",
            "flannel.1 has no FDB entries for its peers; VXLAN has nowhere to send",
            _drop_fdb,
            _restore_fdb,
        ),
        Scenario(
            "mtu-mismatch",
            "subnet.env, cni0 and pods use MTU 1500 over a 1450 VXLAN; large "
            "packets with DF fail, small ones pass",
            _mtu_mismatch,
            _mtu_match,
            note="flannel.1 cannot exceed underlay MTU - 50 here, so the mismatch is on the pod "
            "side, as when FLANNEL_MTU is wrong",
        ),
    ]
}


def inject(lab: Lab, scenario: str, node: str) -> Scenario:
    s = SCENARIOS[scenario]
    spec = lab.spec.by_name(node)
    s.inject(lab, spec)
    lab.faults.setdefault(scenario, set()).add(node)
    return s


def undo(lab: Lab, scenario: str, node: str) -> Scenario:
    s = SCENARIOS[scenario]
    s.undo(lab, lab.spec.by_name(node))
    lab.faults.get(scenario, set()).discard(node)
    return s


__all__ = ["NAT_ADDRESS", "SCENARIOS", "Scenario", "inject", "undo"]
