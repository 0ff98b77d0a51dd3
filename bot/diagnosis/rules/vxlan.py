"""Rules about the overlay between nodes, per backend: the traffic it needs let through, peer
routes and VXLAN entries, host-gw's L2, MTU, offload, wireguard/ipsec peers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.l2 import L2Reach
from flannel_bot.diagnosis.net_conf import Backend
from flannel_bot.diagnosis.node_facts import (
    FDB,
    FILTER_TABLE,
    LINKS,
    NEIGHBOURS,
    OFFLOAD,
    ROUTES,
    SUBNET_ENV,
    Fact,
    Link,
)
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule, sighted_by_node

PUBLIC_IP = "flannel.alpha.coreos.com/public-ip"
# how iptables-save may name an IP protocol without ports
PROTOCOL_NAMES = {"esp": ("esp", "50"), "ipencap": ("ipencap", "ipip", "4")}


@rule("vxlan-blocked", "critical")
def vxlan_blocked(ev: Evidence) -> Iterator[Found]:
    backend = ev.backend()
    if backend.type == "vxlan":
        yield from _blocked(ev, backend)


@rule("backend-traffic-blocked", "critical")
def backend_traffic_blocked(ev: Evidence) -> Iterator[Found]:
    """The same as vxlan-blocked for the other overlay backends: wireguard's UDP 51820, udp's
    8285, ipsec's IKE/ESP, ipip's IP protocol 4."""
    backend = ev.backend()
    if backend.type != "vxlan" and (backend.ports or backend.protocols):
        yield from _blocked(ev, backend)


def _blocked(ev: Evidence, backend: Backend) -> Iterator[Found]:
    wanted = [
        re.compile(rf"-p {proto}\b.*--[ds]port {port}\b") for proto, port in backend.ports
    ] + [re.compile(rf"-p ({'|'.join(PROTOCOL_NAMES[p])})\b") for p in backend.protocols]
    for node in ev.probed():
        table = ev.fact(node, FILTER_TABLE)
        if table is None:
            continue
        drops = [
            line
            for line in table.rules
            if re.search(r"-j (DROP|REJECT)", line) and any(w.search(line) for w in wanted)
        ]
        failed = [p for p, ok in ev.deep.get(node, {}).items() if not ok]
        if drops:
            traffic = backend.traffic()
            yield Found(
                (node,),
                f"{traffic} ({backend.type}) is dropped on {node}",
                f"Flannel's {backend.type} backend carries all cross-node pod traffic in "
                f"{traffic}; a firewall rule or security group dropping it cuts this node's "
                "pods off from other nodes while local traffic keeps working.",
                [EvidenceLine.probe(node, "iptables-filter", line) for line in drops[:3]]
                + (
                    [EvidenceLine(f"{node}: deep check", "no reply from " + ", ".join(failed))]
                    if failed
                    else []
                ),
                Fix(
                    f"allow {traffic} between all nodes (iptables, firewalld, cloud security "
                    "groups)"
                ),
            )


PEER_MECHANISM = (
    "For each peer flanneld installs a route to its subnet via flannel.1, a permanent "
    "neighbour entry for its VTEP and an FDB entry that says where to send the encapsulated "
    "packet; without them traffic to that peer's pods is lost."
)


@rule("vxlan-peer-missing", "critical")
def vxlan_peer_missing(ev: Evidence) -> Iterator[Found]:
    # Each node holds an entry per peer in three tables, so the data grows with nodes squared:
    # the tables are reduced when read (peer_tables), and text is made only for what is missing.
    wanted = ev.peers_wanted()
    yield from inferred(
        ev,
        "vxlan-peer-missing",
        lambda node: f"flanneld could not program its VXLAN peers on {node or 'a node'}",
        PEER_MECHANISM,
        lambda node: Fix.restart(
            ev.flannel_namespace(),
            [node] if node else [],
            "restart flannel on the node (it re-adds every peer)",
        ),
        besides=[n for n in ev.probed() if ev.probe(n, "fdb") is not None],
    )
    if ev.backend().device != "flannel.1":
        return  # the neighbour and FDB probes read flannel.1, VXLAN's default device
    for node in ev.probed():
        if "flannel.1" not in (ev.fact(node, LINKS) or {}):
            continue
        gaps: dict[str, list[str]] = {}
        for cidr in _absent(ev, node, ROUTES, wanted.routes):
            gaps.setdefault(wanted.routes[cidr], []).append(f"route {cidr} via flannel.1")
        for vtep, mac in _absent(ev, node, NEIGHBOURS, wanted.neighbours):
            gaps.setdefault(wanted.neighbours[(vtep, mac)], []).append(f"neighbour {vtep} {mac}")
        for mac, dst in _absent(ev, node, FDB, wanted.fdb):
            gaps.setdefault(wanted.fdb[(mac, dst)], []).append(f"fdb {mac} dst {dst}")
        gaps.pop(node, None)  # a node has no entries for itself
        if gaps:
            missing = [f"{peer}: missing {'; '.join(what)}" for peer, what in sorted(gaps.items())]
            yield Found(
                (node,),
                f"{node} lacks VXLAN entries for {len(missing)} peer(s)",
                PEER_MECHANISM,
                [EvidenceLine.probe(node, "fdb", m) for m in missing[:4]]
                + [quote(s) for s in ev.sighted("vxlan-peer-missing", node)[:1]],
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "restart flannel on the node (it re-adds every peer)",
                ),
            )


def _absent(ev: Evidence, node: str, fact: Fact[Any], wanted: Mapping[Any, str]) -> Iterable[Any]:
    """The wanted entries a node's table lacks: from its reduction when it was reduced on
    reading, else from the whole table; none when the table was not read."""
    table = ev.peer_table(node, fact.probe.id)
    if table is not None:
        return table.missing
    parsed = ev.fact(node, fact)
    if parsed is None:
        return ()  # not read (a bundle without it, or that refused it): unknown, not missing
    if fact is ROUTES:
        present: set[Any] = {r.dst for r in parsed if r.dev == "flannel.1"}
    else:
        present = set(parsed)
    return wanted.keys() - present


@rule("hostgw-not-l2", "critical")
def hostgw_not_l2(ev: Evidence) -> Iterator[Found]:
    if ev.backend().type != "host-gw":
        return
    reported: set[str] = set()
    reach = L2Reach(ev.nodes)  # each address parsed once, not once per pair of nodes
    for node in ev.probed():
        connected = [
            r.dst
            for r in ev.fact(node, ROUTES) or []
            if r.scope == "link" and r.protocol == "kernel"
        ]
        far = reach.far(node, [c for c in connected if c and "/" in c], 5)
        if far:
            reported.add(node)
            yield Found(
                (node,),
                f"host-gw backend but {node} does not share an L2 network with "
                f"{', '.join(n.name for n in far[:5])}",
                "host-gw routes pod subnets via the peer's address as a next hop, which only "
                "works when all nodes are on one L2 segment.",
                [EvidenceLine.probe(node, "ip-route", f"connected: {', '.join(connected)}")],
                Fix("use the vxlan backend, or put all nodes on one L2 network"),
            )
    yield from inferred(
        ev,
        "hostgw-not-l2",
        lambda node: f"host-gw cannot route to a peer from {node or 'a node'}",
        "host-gw routes pod subnets via the peer's address as a next hop, which only works "
        "when all nodes are on one L2 segment: the kernel refuses a next hop it cannot reach "
        "directly (network is unreachable).",
        lambda node: Fix("use the vxlan backend, or put all nodes on one L2 network"),
        besides=reported,
    )


@rule("peer-route-missing", "critical")
def peer_route_missing(ev: Evidence) -> Iterator[Found]:
    """host-gw and ipip route each peer's subnet via the peer's address, wireguard through
    flannel-wg: a missing route loses that peer's pods (VXLAN's own check is vxlan-peer-missing)."""
    backend = ev.backend()
    if backend.type not in ("host-gw", "ipip", "wireguard"):
        return
    peers = {
        p.pod_cidr: (p.name, p.annotations.get(PUBLIC_IP, p.internal_ip))
        for p in ev.nodes
        if p.pod_cidr and ":" not in p.pod_cidr
    }
    for node in ev.probed():
        routes = ev.fact(node, ROUTES)
        if routes is None:
            continue
        have = {r.dst: r for r in routes}
        gaps = []
        for cidr, (peer, address) in sorted(peers.items()):
            if peer == node:
                continue
            route = have.get(cidr)
            if backend.type == "wireguard":
                ok = route is not None and route.dev == backend.device
                want = f"{cidr} dev {backend.device}"
            else:
                ok = route is not None and route.gateway == address
                want = f"{cidr} via {address}"
            if not ok:
                found = f" (found {route.dst} via {route.gateway or route.dev})" if route else ""
                gaps.append(f"{peer}: missing route {want}{found}")
        if gaps:
            yield Found(
                (node,),
                f"{node} lacks {backend.type} routes to {len(gaps)} peer(s)",
                f"With the {backend.type} backend flanneld adds a route to every peer's "
                "subnet (via the peer's address, or through the WireGuard device); without "
                "it traffic to that peer's pods follows the default route and is lost.",
                [EvidenceLine.probe(node, "ip-route", gap) for gap in gaps[:4]],
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "restart flannel on the node (it re-adds every peer's route); if the route "
                    "comes back wrong, check the peer's public-ip annotation",
                ),
            )


@rule("mtu-mismatch", "warning")
def mtu_mismatch(ev: Evidence) -> Iterator[Found]:
    backend = ev.backend()
    reported: set[str] = set()
    for node in ev.probed():
        devs = ev.fact(node, LINKS) or {}
        device = devs.get(backend.device) if backend.device else None
        if device is None and backend.device:
            continue  # no overlay device: other rules say why
        env = ev.fact(node, SUBNET_ENV) or {}
        env_mtu = int(env["FLANNEL_MTU"]) if env.get("FLANNEL_MTU", "").isdigit() else None
        pod_mtu = device.mtu if device is not None else env_mtu
        uplink = _uplink(ev, node, devs, device)
        problems = []
        if device is not None and env_mtu is not None and env_mtu != device.mtu:
            problems.append(
                EvidenceLine.probe(
                    node,
                    "subnet-env",
                    f"FLANNEL_MTU={env_mtu} but {device.name} mtu {device.mtu}",
                )
            )
        bridge = devs.get("cni0")
        if bridge is not None and pod_mtu is not None and bridge.mtu > pod_mtu:
            problems.append(
                EvidenceLine.probe(
                    node,
                    "ip-addr",
                    f"cni0 mtu {bridge.mtu} > {device.name if device else 'FLANNEL_MTU'} {pod_mtu}",
                )
            )
        for dev in (device, devs.get(backend.device_v6) if backend.device_v6 else None):
            if dev is not None and uplink is not None and dev.mtu > uplink.mtu - backend.overhead:
                problems.append(
                    EvidenceLine.probe(
                        node,
                        "ip-addr",
                        f"{dev.name} mtu {dev.mtu} > {uplink.name} mtu {uplink.mtu} - "
                        f"{backend.overhead}",
                    )
                )
        if problems:
            reported.add(node)
            yield Found(
                (node,),
                f"MTU mismatch on {node}",
                f"The {backend.type} backend adds {backend.overhead} bytes; pods must use the "
                f"overlay MTU (underlay MTU - {backend.overhead}). A larger pod or bridge MTU "
                "makes big packets vanish while pings and small requests work (TLS "
                "handshakes and large responses hang).",
                problems,
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "set FLANNEL_MTU / the pods' MTU to the overlay device's MTU and recreate "
                    "the pods",
                ),
            )
    yield from inferred(
        ev,
        "mtu-mismatch",
        lambda node: f"the interface MTU leaves flannel's backend no room on {node or 'a node'}",
        f"The {backend.type} backend takes {backend.overhead} bytes of the interface MTU for its "
        "header; an interface too small for it (or an MTU flanneld cannot read) stops flanneld.",
        lambda node: Fix(
            "raise the uplink's MTU (or choose the interface with --iface), or use a backend "
            "with less overhead"
        ),
        besides=reported,
    )


def _uplink(ev: Evidence, node: str, devs: dict[str, Link], device: Link | None) -> Link | None:
    """The interface flannel sends on: the VXLAN device's parent, else the one holding the
    node's public-ip (or InternalIP), else eth0."""
    if device is not None and device.parent in devs:
        return devs[device.parent]
    info = ev.node(node)
    address = info.annotations.get(PUBLIC_IP, info.internal_ip) if info else ""
    for link in devs.values():
        if address and link.has_ip(address):
            return link
    return devs.get("eth0")


@rule("vxlan-checksum-offload", "info")
def vxlan_checksum_offload(ev: Evidence) -> Iterator[Found]:
    seen = sighted_by_node(ev, "vxlan-checksum-offload")
    for node in sorted(set(ev.probed()) | set(seen)):
        on = (ev.fact(node, OFFLOAD) or {}).get("tx-checksum-ip-generic") == "on" if node else False
        bad = seen.get(node, [])
        if not on and not bad:
            continue
        lines = [EvidenceLine.probe(node, "offload", "tx-checksum-ip-generic: on")] if on else []
        lines += [quote(s) for s in bad[:2]]
        yield Found(
            (node,) if node else (),
            f"VXLAN packets leave {node or 'a node'} with bad UDP checksums"
            if bad
            else f"checksum offload is on for flannel.1 on {node}",
            "Some kernels and NICs corrupt checksums of VXLAN packets with offload on "
            "(symptom: cross-node TCP hangs, 63-second delays to Services, `UDP: bad checksum` "
            "in the receiver's kernel log); flannel turns it off on newer versions.",
            lines,
            Fix("ethtool -K flannel.1 tx-checksum-ip-generic off (and upgrade flannel)"),
            # the kernel saying it drops them makes this a cause, not a hint
            severity="critical" if bad else "",
            certainty="confirmed" if on or bad else "inferred",
        )


@rule("peer-setup-failed", "critical")
def peer_setup_failed(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "peer-setup-failed",
        lambda node: f"flanneld cannot set up its peers on {node or 'a node'}",
        "With the wireguard or ipsec backend flanneld programs a peer, a route and (ipsec) "
        "xfrm policies per node; one it cannot program leaves that peer's pods unreachable.",
        lambda node: Fix.restart(
            ev.flannel_namespace(),
            [node] if node else [],
            "check the peer's backend annotations (public key, public-ip) and that the peers "
            "reach each other on the backend's port, then restart flannel",
        ),
    )
