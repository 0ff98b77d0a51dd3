"""Rules about the node's interfaces: stale cni0/flannel.1 addresses, the wrong uplink."""

from __future__ import annotations

from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence, matching_lines
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.node_facts import LINKS, in_cidr
from bot.diagnosis.rule import Found, rule


@rule("stale-interface-address", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def stale_interface_address(ev: Evidence) -> Iterator[Found]:
    logs = {
        p.node: (s, matching_lines(t, r"incompatible addresses", 1))
        for p, s, t in ev.flannel_logs()
    }
    bridge_events = ev.stuck_pod_events("already has an IP address different")
    for node in ev.probed():
        info = ev.node(node)
        if info is None or not info.pod_cidr:
            continue
        lines = []
        links = ev.fact(node, LINKS) or {}
        for dev in ("cni0", "flannel.1"):
            link = links.get(dev)
            if link is None:
                continue
            if any(not in_cidr(a, info.pod_cidr) for a in link.inet):
                lines.append(EvidenceLine.probe(node, "ip-addr", f"{dev}: {' '.join(link.inet)}"))
        source, hit = logs.get(node, ("", []))
        if hit:
            lines.append(EvidenceLine(source, hit[0]))
        for e in bridge_events:
            if e.source_host == node:
                lines.append(EvidenceLine(f"API: event on {e.involved_name}", e.message[-200:]))
                break
        if lines:
            yield Found(
                (node,),
                f"cni0/flannel.1 on {node} carry addresses outside its podCIDR {info.pod_cidr}",
                "`kubeadm reset` leaves cni0 and flannel.1 behind; after re-joining, the node "
                "gets a new podCIDR but the devices keep the old addresses, so flanneld refuses "
                "flannel.1 (incompatible addresses) and the bridge plugin refuses cni0.",
                lines,
                Fix(
                    "ip link delete cni0; ip link delete flannel.1; restart flannel (it "
                    "recreates both)",
                    "node.clean-interfaces",
                    {"node": node},
                ),
            )


@rule("wrong-interface", "critical")
def wrong_interface(ev: Evidence) -> Iterator[Found]:
    for node in ev.nodes:
        public = node.annotations.get("flannel.alpha.coreos.com/public-ip", "")
        if public and node.internal_ip and public != node.internal_ip:
            lines = [
                EvidenceLine(
                    f"API: node {node.name}",
                    f"flannel.alpha.coreos.com/public-ip: {public}, InternalIP: {node.internal_ip}",
                )
            ]
            pod = ev.flannel_pods_by_node().get(node.name)
            if pod is not None:
                source, text = ev.log(pod)
                for line in matching_lines(text, r"Using interface with name", 1):
                    lines.append(EvidenceLine(source, line))
            device = next(
                (
                    link.name
                    for link in (ev.fact(node.name, LINKS) or {}).values()
                    if link.has_ip(node.internal_ip)
                ),
                "",
            )
            yield Found(
                (node.name,),
                f"flannel on {node.name} uses {public}, not the node's InternalIP "
                f"{node.internal_ip}",
                "On multi-NIC nodes flanneld picks the default-route interface (often a NAT "
                "NIC with the same address on every node); peers then send VXLAN to an address "
                "that does not reach this node.",
                lines,
                Fix(
                    f"add --iface={device or '<the InternalIP interface>'} (or "
                    "--iface-can-reach) to flanneld's args in the DaemonSet, then restart flannel",
                    "flannel.repair" if device else None,
                    {"iface": device} if device else {},
                ),
            )
