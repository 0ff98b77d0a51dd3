"""The seed incidents, injected for real into a running lab, and undone.

Each scenario changes the node (over its namespaces) and what the API shows (logs, events, pod and
node status) the way the real incident does, mostly by breaking the cause and then letting the lab's
flanneld / kube-proxy restart run into it. `restore` removes the cause and restarts what the real
fix would restart. Where this kernel cannot reproduce an incident exactly, `note` says how close
the lab gets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from flannel_bot.lab import flannel, k3s, objects
from flannel_bot.lab.apiserver import StatusError
from flannel_bot.lab.lab import Lab, flush_pod_route_cache
from flannel_bot.lab.network import in_netns, ip_batch, node_exec, run, write_sysctl
from flannel_bot.lab.nodes import sandbox_id, write_ipam
from flannel_bot.lab.objects import FLANNEL_DS, FLANNEL_NS
from flannel_bot.lab.topology import (
    API_SERVICE_IP,
    K3S_CNI_BIN_DIR,
    SERVICE_CIDR,
    VXLAN_MTU,
    VXLAN_PORT,
    NodeSpec,
)

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
    # a fix takes the address and route away but may leave kube-ipvs0 itself (as on a node)
    linked = in_netns(node.netns, ["ip", "-o", "link", "show", "kube-ipvs0"], check=False)
    ip_batch(
        [
            *([] if linked.strip() else ["link add kube-ipvs0 type bridge"]),
            f"addr replace {API_SERVICE_IP}/32 dev kube-ipvs0",
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


def _pending_pod(lab: Lab, node: NodeSpec, reason: str, message: str) -> str:
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
    return name


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


# -- k3s: the flannel embedded in k3s --------------------------------------------------------------

RENAMED_NIC = "ens18"
CUSTOM_CNI_CONF = "/etc/rancher/k3s/flannel-cni.conflist"


def _rename_nic(lab: Lab, node: NodeSpec, old: str, new: str) -> None:
    """Rename the node's uplink (its address stays; the route to the services comes back)."""
    ip_batch(
        [
            f"link set {old} down",
            f"link set {old} name {new}",
            f"link set {new} up",
            f"route replace {SERVICE_CIDR} via {lab.spec.svc_ip}",
        ],
        netns=node.netns,
    )


def _k3s_nic_renamed(lab: Lab, node: NodeSpec) -> None:
    """After a reboot the uplink is ens18, not eth0 (a replaced NIC, predictable interface
    names switched on); k3s still starts with --flannel-iface eth0. The reboot took what flannel
    and the bridge plugin had made (subnet.env, flannel.1, cni0); k3s stops at looking up eth0,
    so its kubelet and flannel never start."""
    _rename_nic(lab, node, "eth0", RENAMED_NIC)
    node.private("/run/flannel/subnet.env").unlink(missing_ok=True)
    ip_batch(["link delete flannel.1", "link delete cni0"], netns=node.netns)
    lab.restart_k3s(node)


def _k3s_nic_named_back(lab: Lab, node: NodeSpec) -> None:
    _rename_nic(lab, node, RENAMED_NIC, "eth0")
    lab.restart_k3s(node)


def _k3s_sandbox_fails(lab: Lab, node: NodeSpec, error: str) -> None:
    """A new pod on the node whose sandbox fails with the runtime's `error`: the kubelet's
    event, and its lines in the k3s journal (k3s runs the kubelet)."""
    sandbox = sandbox_id(node, 99)
    error = f'failed to setup network for sandbox "{sandbox}": {error}'
    name = _pending_pod(
        lab,
        node,
        "FailedCreatePodSandBox",
        f"Failed to create pod sandbox: rpc error: code = Unknown desc = {error}",
    )
    k3s.kubelet_sandbox_failed(node, name, f"rpc error: code = Unknown desc = {error}", k3s.pid())


def _k3s_stale_cni0(lab: Lab, node: NodeSpec) -> None:
    """The node re-joined from another cluster without a reboot: cni0 keeps the old cluster's
    gateway. k3s's own CNI config lets the bridge plugin replace it (forceAddress), so this node
    runs k3s with --flannel-cni-conf pointing at a conflist copied from kube-flannel.yml, which
    does not: every new pod fails on the old address."""
    custom = node.private(CUSTOM_CNI_CONF)
    custom.parent.mkdir(parents=True, exist_ok=True)
    custom.write_text(json.dumps(flannel.CNI_CONF, indent=2) + "\n")
    k3s.write_config(node, [*k3s.default_args(node), "--flannel-cni-conf", CUSTOM_CNI_CONF])
    ip_batch(["addr flush dev cni0", f"addr add 10.245.{node.index}.1/24 dev cni0"], node.netns)
    lab.restart_k3s(node)
    _k3s_sandbox_fails(
        lab,
        node,
        'plugin type="flannel" failed (add): failed to delegate add: failed to set bridge '
        f'addr: "cni0" already has an IP address different from {node.gateway}/24',
    )


def _k3s_fresh_cni0(lab: Lab, node: NodeSpec) -> None:
    """`ip link delete cni0` (the bridge plugin recreates it with the node's gateway) and k3s
    back on its own CNI config."""
    ip_batch(["addr flush dev cni0", f"addr add {node.gateway}/24 dev cni0"], node.netns)
    node.private(CUSTOM_CNI_CONF).unlink(missing_ok=True)
    k3s.write_config(node, k3s.default_args(node))
    _delete_pending(lab, node)
    lab.restart_k3s(node)


def _k3s_remove_plugin(plugin: str, error: str) -> Callable[[Lab, NodeSpec], None]:
    def remove(lab: Lab, node: NodeSpec) -> None:
        (node.cni_bin / plugin).unlink(missing_ok=True)
        _k3s_sandbox_fails(lab, node, error)

    return remove


def _k3s_restore_plugin(plugin: str) -> Callable[[Lab, NodeSpec], None]:
    def restore(lab: Lab, node: NodeSpec) -> None:
        k3s.restore_plugin(node, plugin)
        _delete_pending(lab, node)

    return restore


K3S_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "k3s-iface-missing",
            f"the node came back from a reboot with its NIC named {RENAMED_NIC}; k3s runs with "
            "--flannel-iface eth0 and stops at `unable to find interface eth0`: no kubelet, no "
            "flannel, no subnet.env",
            _k3s_nic_renamed,
            _k3s_nic_named_back,
            note="the NIC is renamed in place (its address stays, so SSH still reaches the node); "
            "the reboot is played by removing subnet.env, flannel.1 and cni0",
        ),
        Scenario(
            "k3s-stale-cni0",
            "re-joined without a reboot: cni0 keeps 10.245.N.1/24 while the podCIDR is "
            "10.244.N.0/24, and a --flannel-cni-conf copied from kube-flannel.yml (no "
            "forceAddress) makes every new pod fail on it",
            _k3s_stale_cni0,
            _k3s_fresh_cni0,
            note="with k3s's own CNI config the bridge plugin replaces the old address itself "
            "(forceAddress); that is why the node runs a custom --flannel-cni-conf",
        ),
        Scenario(
            "k3s-portmap-missing",
            f"{K3S_CNI_BIN_DIR}/portmap is gone; new pods fail with `failed to find plugin "
            '"portmap"`',
            _k3s_remove_plugin(
                "portmap",
                'plugin type="portmap" failed (add): failed to find plugin "portmap" in path '
                f"[{K3S_CNI_BIN_DIR}]",
            ),
            _k3s_restore_plugin("portmap"),
        ),
        Scenario(
            "k3s-bridge-missing",
            f"{K3S_CNI_BIN_DIR}/bridge is gone; new pods fail with `failed to find plugin "
            '"bridge"` in the flannel plugin\'s delegate',
            _k3s_remove_plugin(
                "bridge",
                'plugin type="flannel" failed (add): failed to delegate add: failed to find '
                f'plugin "bridge" in path [{K3S_CNI_BIN_DIR}]',
            ),
            _k3s_restore_plugin("bridge"),
        ),
    ]
}


def scenarios_for(lab: Lab) -> dict[str, Scenario]:
    """The scenarios a lab can play: the kubeadm ones, or on a k3s lab the k3s ones."""
    return K3S_SCENARIOS if lab.is_k3s else SCENARIOS


class UnknownScenario(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def scenario_for(lab: Lab, scenario: str) -> Scenario:
    known = scenarios_for(lab)
    if scenario not in known:
        raise UnknownScenario(
            f"{scenario} is not a scenario of a {lab.spec.distribution} lab; "
            f"these are: {', '.join(sorted(known))}"
        )
    return known[scenario]


def inject(lab: Lab, scenario: str, node: str) -> Scenario:
    s = scenario_for(lab, scenario)
    spec = lab.spec.by_name(node)
    s.inject(lab, spec)
    lab.faults.setdefault(scenario, set()).add(node)
    return s


def undo(lab: Lab, scenario: str, node: str) -> Scenario:
    s = scenario_for(lab, scenario)
    s.undo(lab, lab.spec.by_name(node))
    lab.faults.get(scenario, set()).discard(node)
    return s


__all__ = [
    "K3S_SCENARIOS",
    "NAT_ADDRESS",
    "SCENARIOS",
    "Scenario",
    "inject",
    "scenario_for",
    "scenarios_for",
    "undo",
]
