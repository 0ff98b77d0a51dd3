"""Rules about the node's interfaces: stale cni0/flannel.1 addresses, the wrong uplink."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

from flannel_bot.diagnosis.catalogue.message import Sighting
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.node_facts import LINKS, NEIGHBOURS, ROUTES, in_cidr
from flannel_bot.diagnosis.rule import Found, inferred, leased_subnet, quote, rule, sighted_by_node


@rule("stale-interface-address", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def stale_interface_address(ev: Evidence) -> Iterator[Found]:
    seen = sighted_by_node(ev, "stale-interface-address")
    reported: set[str] = set()
    for node in ev.probed():
        links = ev.fact(node, LINKS) or {}
        lease, read_from = _lease(ev, node)
        devices = ("cni0", "flannel.1") if read_from != "flannel.1" else ("cni0",)
        lines = []
        for dev in devices:
            link = links.get(dev)
            if link is None or not lease:
                continue
            if read_from == "flannel.1":
                stale = any(not _holds(a, lease) for a in link.inet)
            else:
                stale = any(not in_cidr(a, lease) for a in link.inet)
            if stale:
                lines.append(EvidenceLine.probe(node, "ip-addr", f"{dev}: {' '.join(link.inet)}"))
        if lines:
            reported.add(node)
            if read_from == "flannel.1":
                summary = f"cni0 on {node} keeps another subnet than flannel.1's lease {lease}"
                lines.append(EvidenceLine.probe(node, "ip-addr", f"flannel.1: {lease}"))
            else:
                stale_devices = " and ".join(line.text.split(":")[0] for line in lines)
                verb = "carries" if len(lines) == 1 else "carry"
                summary = f"{stale_devices} on {node} {verb} addresses outside its lease {lease}"
                lines.append(EvidenceLine(read_from, f"lease {lease}"))
            yield Found(
                (node,),
                summary,
                STALE_MECHANISM,
                lines + [quote(s) for s in seen.get(node, [])[:2]],
                stale_fix(node),
            )
    yield from inferred(
        ev,
        "stale-interface-address",
        lambda node: f"cni0/flannel.1 on {node or 'a node'} keep addresses of an old subnet",
        STALE_MECHANISM,
        stale_fix,
        besides=reported,
    )


STALE_MECHANISM = (
    "`kubeadm reset` leaves cni0 and flannel.1 behind; after re-joining, the node gets a new "
    "podCIDR but the devices keep the old addresses, so flanneld refuses flannel.1 "
    "(incompatible addresses) and the bridge plugin refuses cni0."
)


def _lease(ev: Evidence, node: str) -> tuple[str, str]:
    """The node's flannel subnet and what it was read from (`leased_subnet`), else flannel.1's
    own address (flanneld recreates flannel.1 with the current lease's network address; cni0 is
    what keeps an old one)."""
    lease, read_from = leased_subnet(ev, node)
    if lease:
        return lease, read_from
    vtep = (ev.fact(node, LINKS) or {}).get("flannel.1")
    if vtep is not None and vtep.inet:
        return vtep.inet[0].split("/")[0], "flannel.1"
    return "", ""


def _holds(address: str, ip: str) -> bool:
    """Whether the network of an interface address (10.244.1.1/24) holds `ip`."""
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_interface(address).network
    except ValueError:
        return True  # junk is not evidence of staleness


def stale_fix(node: str) -> Fix:
    return Fix.on_node(
        "ip link delete cni0; ip link delete flannel.1; restart flannel (it recreates both)",
        "node.clean-interfaces",
        node,
    )


@rule("interface-not-found", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def interface_not_found(ev: Evidence) -> Iterator[Found]:
    confirmed: set[str] = set()
    for node, seen in sorted(sighted_by_node(ev, "interface-not-found").items()):
        shown = _interface_absent(ev, node, seen) if node else None
        if shown is not None:
            confirmed.add(node)
            yield Found(
                (node,),
                f"flannel finds no interface to use on {node}",
                IFACE_MECHANISM,
                [*[quote(s) for s in seen[:2]], shown],
                IFACE_FIX,
            )
    yield from inferred(
        ev,
        "interface-not-found",
        lambda node: f"flannel finds no interface to use on {node or 'a node'}",
        IFACE_MECHANISM,
        lambda node: IFACE_FIX,
        besides=confirmed,
    )


IFACE_MECHANISM = (
    "flanneld needs one external interface with an IPv4 address: the one --iface, "
    "--iface-regex or --iface-can-reach names (k3s: --flannel-iface), or the default route's. "
    "A name that differs per node, a typo, an interface not up yet at start, or no default "
    "route leaves it none and it exits."
)
IFACE_FIX = Fix(
    "point --iface (or --iface-regex / --iface-can-reach; k3s --flannel-iface) at an "
    "interface every node has with an IPv4 address, or give the node a default route; start "
    "flannel only once the network is online"
)
# the interfaces a line names: `matching bond0`, `for interface bond0`, `interface eth1 not
# found` (a lookahead, so `interface matching bond0` yields both words; stop words drop out)
NAMED_IFACE = re.compile(r"(?=\b(?:matching|interface)\s+([A-Za-z][\w.-]*))")
NOT_NAMES = frozenset({"to", "with", "that", "matching", "use", "and", "for"})


def _interface_absent(ev: Evidence, node: str, seen: list[Sighting]) -> EvidenceLine | None:
    """What the node's own probes show of the missing interface: the named interface absent
    or without an IPv4 address, or no default route; None when they do not show it."""
    links = ev.fact(node, LINKS)
    for s in seen:
        if "default route" in s.line:
            routes = ev.fact(node, ROUTES)
            if routes is not None and not any(r.dst == "default" for r in routes):
                return EvidenceLine.probe(node, "ip-route", "no default route")
            continue
        names = [m.group(1) for m in NAMED_IFACE.finditer(s.line)]
        names = [n for n in names if n not in NOT_NAMES]
        if not names or links is None:
            continue
        name = names[0]
        link = links.get(name)
        if link is None:
            return EvidenceLine.probe(node, "ip-addr", f"no interface {name} on the node")
        if not link.inet:  # Link.inet holds the IPv4 addresses only
            return EvidenceLine.probe(node, "ip-addr", f"{name} has no IPv4 address")
    return None


@rule("vxlan-port-conflict", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def vxlan_port_conflict(ev: Evidence) -> Iterator[Found]:
    confirmed: set[str] = set()
    device = ev.backend().device
    for node in sorted(sighted_by_node(ev, "vxlan-port-conflict")):
        links = ev.fact(node, LINKS) if node else None
        others = [
            link.name
            for link in (links or {}).values()
            if link.kind == "vxlan" and link.name != device
        ]
        if others:
            confirmed.add(node)
            yield Found(
                (node,),
                f"another VXLAN device is in flannel's way on {node}",
                PORT_MECHANISM,
                [
                    *[quote(s) for s in ev.sighted("vxlan-port-conflict", node)[:2]],
                    EvidenceLine.probe(node, "ip-addr", "VXLAN devices: " + ", ".join(others)),
                ],
                PORT_FIX,
            )
    yield from inferred(
        ev,
        "vxlan-port-conflict",
        lambda node: f"another VXLAN device is in flannel's way on {node or 'a node'}",
        PORT_MECHANISM,
        lambda node: PORT_FIX,
        besides=confirmed,
    )


PORT_MECHANISM = (
    "A leftover VXLAN device of another CNI (cilium_vxlan, vxlan.calico) or of an older flannel "
    "holds the UDP port or VNI, so flanneld cannot create or bring up its own."
)
PORT_FIX = Fix(
    "remove the other VXLAN device (`ip -d link show type vxlan` lists them) and the CNI it "
    "belongs to, then restart flannel"
)


@rule("vtep-mac-mismatch", "critical")
def vtep_mac_mismatch(ev: Evidence) -> Iterator[Found]:
    """flannel.1's MAC changed after flanneld published it (udev's MACAddressPolicy=persistent
    rewrites it on systemd 242+): peers send to the published MAC and the node drops it."""
    reported: set[str] = set()
    for node in ev.probed():
        info = ev.node(node)
        link = (ev.fact(node, LINKS) or {}).get("flannel.1")
        if info is None or link is None or not link.mac:
            continue
        published = vtep_mac(info.annotations.get("flannel.alpha.coreos.com/backend-data", ""))
        if published and published != link.mac:
            reported.add(node)
            yield Found(
                (node,),
                f"flannel.1 on {node} has MAC {link.mac}, peers were told {published}",
                "flanneld publishes flannel.1's MAC in the node's backend-data annotation and "
                "peers program it into their neighbour and FDB tables; when udev or "
                "NetworkManager changes the MAC afterwards, every packet peers send to this "
                "node's pods is addressed to a MAC it no longer has.",
                [
                    EvidenceLine.probe(node, "ip-addr", f"flannel.1 link/ether {link.mac}"),
                    EvidenceLine(
                        f"API: node {node}",
                        f"flannel.alpha.coreos.com/backend-data VtepMAC {published}",
                    ),
                ],
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "stop udev renaming it (a .link file with MACAddressPolicy=none for "
                    "flannel*), then restart flannel on the node so it republishes the MAC",
                ),
            )
    yield from stale_peer_entries(ev, reported)


def stale_peer_entries(ev: Evidence, reported: set[str]) -> Iterator[Found]:
    """Another node's neighbour entry for this node's VTEP names a MAC flannel.1 no longer has."""
    devices = {
        node: link
        for node in ev.probed()
        if (link := (ev.fact(node, LINKS) or {}).get("flannel.1")) is not None and link.mac
    }
    if not devices:
        return
    # every node's neighbour entries by address, read once (not once per pair of nodes); a
    # table reduced on reading holds only the unwanted entries, and every wanted one it did
    # not miss (`held`)
    by_address: dict[str, list[tuple[str, str]]] = {}
    reduced: dict[str, frozenset[Any]] = {}
    for other in ev.probed():
        table = ev.peer_table(other, "ip-neigh")
        if table is not None:
            reduced[other] = table.missing
        for ip, mac in ev.fact(other, NEIGHBOURS) or set():
            by_address.setdefault(ip, []).append((other, mac))
    wanted_macs: dict[str, list[str]] = {}
    for ip, mac in ev.peers_wanted().neighbours if reduced else ():
        wanted_macs.setdefault(ip, []).append(mac)
    for node, link in sorted(devices.items()):
        if node in reported:
            continue
        vtep = {a.split("/")[0] for a in link.inet}
        stale: dict[str, set[str]] = {}
        for ip in vtep:
            for other, mac in by_address.get(ip, ()):
                if other != node and mac != link.mac:
                    stale.setdefault(other, set()).add(mac)
            for mac in wanted_macs.get(ip, ()):
                if mac == link.mac:
                    continue
                for other, missing in reduced.items():
                    if other != node and (ip, mac) not in missing:
                        stale.setdefault(other, set()).add(mac)
        if stale:
            other = min(stale)  # the first in name order, as ev.probed() lists them
            first = min(stale[other])
            yield Found(
                (node,),
                f"{other} sends to {node}'s VTEP at MAC {first}; flannel.1 on {node} "
                f"has {link.mac}",
                "flannel.1's MAC changed after flanneld published it (udev's "
                "MACAddressPolicy=persistent on systemd 242+, or NetworkManager), so peers "
                "address the encapsulated frames to a MAC the node drops.",
                [
                    EvidenceLine.probe(node, "ip-addr", f"flannel.1 link/ether {link.mac}"),
                    EvidenceLine.probe(other, "ip-neigh", f"{sorted(vtep)[0]} lladdr {first}"),
                ],
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "stop udev renaming it (a .link file with MACAddressPolicy=none for "
                    "flannel*), then restart flannel on the node so it republishes the MAC",
                ),
            )


def vtep_mac(backend_data: str) -> str:
    try:
        value = json.loads(backend_data) if backend_data else {}
    except ValueError:
        return ""
    return str(value.get("VtepMAC", "")).lower() if isinstance(value, dict) else ""


@rule("wrong-interface", "critical")
def wrong_interface(ev: Evidence) -> Iterator[Found]:
    reported: set[str] = set()
    for node in ev.nodes:
        public = node.annotations.get("flannel.alpha.coreos.com/public-ip", "")
        if (
            public
            and node.internal_ip
            and public != node.internal_ip
            and not node.annotations.get("flannel.alpha.coreos.com/public-ip-overwrite")
        ):
            lines = [
                EvidenceLine(
                    f"API: node {node.name}",
                    f"flannel.alpha.coreos.com/public-ip: {public}, InternalIP: {node.internal_ip}",
                )
            ]
            lines += [quote(s) for s in ev.sighted("wrong-interface", node.name, True)[:1]]
            device = next(
                (
                    link.name
                    for link in (ev.fact(node.name, LINKS) or {}).values()
                    if link.has_ip(node.internal_ip)
                ),
                "",
            )
            reported.add(node.name)
            yield Found(
                (node.name,),
                f"flannel on {node.name} uses {public}, not the node's InternalIP "
                f"{node.internal_ip}",
                WRONG_MECHANISM,
                lines,
                Fix(
                    f"add --iface={device or '<the InternalIP interface>'} (or "
                    "--iface-can-reach) to flanneld's args in the DaemonSet, then restart flannel",
                    "flannel.repair" if device else None,
                    {"iface": device} if device else {},
                ),
            )
    yield from shared_address(ev, reported)
    yield from inferred(
        ev,
        "wrong-interface",
        lambda node: f"flannel cannot use the address it was given on {node or 'a node'}",
        WRONG_MECHANISM,
        lambda node: Fix(
            "give flanneld an address the node really has and peers can reach: correct "
            "--public-ip (k3s --node-external-ip) or the interface flags --iface / "
            "--iface-can-reach"
        ),
        besides=reported,
    )


WRONG_MECHANISM = (
    "On multi-NIC nodes flanneld picks the default-route interface (often a NAT NIC with the "
    "same address on every node); peers then send VXLAN to an address that does not reach "
    "this node."
)
# VirtualBox's NAT network gives every VM 10.0.2.15 (Vagrant boxes' first NIC)
NAT_ADDRESSES = frozenset({"10.0.2.15"})
USING = re.compile(r"Using interface with name (\S+) and address (\S+)")


def shared_address(ev: Evidence, reported: set[str]) -> Iterator[Found]:
    """flannel on several nodes using one address (each node's NAT NIC), or VirtualBox's NAT
    address: the address is not the node's own, so peers cannot reach it."""
    used: dict[str, list[tuple[str, str, EvidenceLine]]] = {}
    for s in [*ev.sighted("wrong-interface", corroborating=True)]:
        found = USING.search(s.line)
        if found and s.node and s.node not in reported:
            used.setdefault(found.group(2), []).append((s.node, found.group(1), quote(s)))
    for pod in ev.flannel_pods():  # flannel runs on the host network: its pod IP is the node's
        if pod.pod_ip and pod.node not in reported:
            line = EvidenceLine(
                f"API: pod {pod.namespace}/{pod.name}", f"podIP {pod.pod_ip} on {pod.node}"
            )
            used.setdefault(pod.pod_ip, []).append((pod.node, "", line))
    for address, uses in sorted(used.items()):
        nodes = sorted({n for n, _, _ in uses})
        if len(nodes) < 2 and address not in NAT_ADDRESSES:
            continue
        device = next((d for _, d, _ in uses if d), "")
        why = (
            f"VirtualBox's NAT address {address}"
            if address in NAT_ADDRESSES
            else f"the same address {address} on {', '.join(nodes)}"
        )
        yield Found(
            tuple(nodes),
            f"flannel uses {why}" + (f" ({device})" if device else ""),
            WRONG_MECHANISM,
            [line for _, _, line in uses[:3]],
            Fix(
                "add --iface=<the interface on the nodes' shared network> (or --iface-can-reach="
                "<another node's address>) to flanneld's args, then restart flannel",
            ),
            certainty="inferred",
        )


@rule("flannel-public-ip-unreachable", "warning")
def flannel_public_ip_unreachable(ev: Evidence) -> Iterator[Found]:
    """k3s told the node's external address (--node-external-ip) while flannel advertises its
    internal one: peers in another network cannot reach it."""
    for node in ev.nodes:
        args = node.annotations.get("k3s.io/node-args", "")
        external = re.search(r'"--node-external-ip","([^"]+)"', args)
        public = node.annotations.get("flannel.alpha.coreos.com/public-ip", "")
        overwrite = node.annotations.get("flannel.alpha.coreos.com/public-ip-overwrite", "")
        if external and public and public != external.group(1) and not overwrite:
            yield Found(
                (node.name,),
                f"flannel on {node.name} advertises {public}, not its external address "
                f"{external.group(1)}",
                "flannel tells peers to send encapsulated traffic to the node's public-ip; "
                "an internal address behind NAT is unreachable from nodes in another network, "
                "so pods there cannot reach this node's pods.",
                [
                    EvidenceLine(
                        f"API: node {node.name}", f"flannel.alpha.coreos.com/public-ip: {public}"
                    ),
                    EvidenceLine(
                        f"API: node {node.name}",
                        f"k3s.io/node-args: --node-external-ip {external.group(1)}",
                    ),
                ],
                Fix(
                    "start k3s with --flannel-external-ip (servers) so flannel uses the nodes' "
                    "external addresses, or set the flannel.alpha.coreos.com/public-ip-overwrite "
                    "annotation"
                ),
            )
