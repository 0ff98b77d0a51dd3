"""Rules about the overlay between nodes: UDP 8472, peer entries, host-gw's L2, MTU, offload."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.node_facts import (
    FDB,
    FILTER_TABLE,
    LINKS,
    NEIGHBOURS,
    OFFLOAD,
    ROUTES,
    SUBNET_ENV,
    in_cidr,
)
from bot.diagnosis.rule import Found, inferred, quote, rule, sighted_by_node

VXLAN_PORT = "8472"


@rule("vxlan-blocked", "critical")
def vxlan_blocked(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        table = ev.fact(node, FILTER_TABLE)
        if table is None:
            continue
        drops = [
            line
            for line in table.rules
            if "udp" in line
            and (f"--dport {VXLAN_PORT}" in line or f"--sport {VXLAN_PORT}" in line)
            and re.search(r"-j (DROP|REJECT)", line)
        ]
        failed = [p for p, ok in ev.deep.get(node, {}).items() if not ok]
        if drops:
            yield Found(
                (node,),
                f"UDP {VXLAN_PORT} (VXLAN) is dropped on {node}",
                "Flannel's VXLAN backend carries all cross-node pod traffic in UDP 8472; a "
                "firewall rule or security group dropping it cuts this node's pods off from "
                "other nodes while local traffic keeps working.",
                [EvidenceLine.probe(node, "iptables-filter", line) for line in drops[:3]]
                + (
                    [EvidenceLine(f"{node}: deep check", "no reply from " + ", ".join(failed))]
                    if failed
                    else []
                ),
                Fix(
                    f"allow UDP {VXLAN_PORT} between all nodes (iptables, firewalld, cloud "
                    "security groups)"
                ),
            )


@rule("vxlan-peer-missing", "critical")
def vxlan_peer_missing(ev: Evidence) -> Iterator[Found]:
    # Each node holds an entry per peer in three tables, so the data grows with nodes squared:
    # compare whole sets per node and format text only for what is missing.
    routes_want: dict[str, str] = {}
    neigh_want: dict[tuple[str, str], str] = {}
    fdb_want: dict[tuple[str, str], str] = {}
    for peer in ev.nodes:
        data = peer.annotations.get("flannel.alpha.coreos.com/backend-data", "")
        try:
            mac = str(json.loads(data).get("VtepMAC", "")).lower() if data else ""
        except (ValueError, AttributeError):
            mac = ""
        public = peer.annotations.get("flannel.alpha.coreos.com/public-ip", peer.internal_ip)
        if peer.pod_cidr and mac:
            routes_want[peer.pod_cidr] = peer.name
            neigh_want[(peer.pod_cidr.split("/")[0], mac)] = peer.name
            fdb_want[(mac, public)] = peer.name
    for node in ev.probed():
        if "flannel.1" not in (ev.fact(node, LINKS) or {}):
            continue
        routes = {r.dst for r in ev.fact(node, ROUTES) or [] if r.dev == "flannel.1"}
        neigh = ev.fact(node, NEIGHBOURS) or set()
        fdb = ev.fact(node, FDB) or set()
        gaps: dict[str, list[str]] = {}
        for cidr in routes_want.keys() - routes:
            gaps.setdefault(routes_want[cidr], []).append(f"route {cidr} via flannel.1")
        for vtep, mac in neigh_want.keys() - neigh:
            gaps.setdefault(neigh_want[(vtep, mac)], []).append(f"neighbour {vtep} {mac}")
        for mac, dst in fdb_want.keys() - fdb:
            gaps.setdefault(fdb_want[(mac, dst)], []).append(f"fdb {mac} dst {dst}")
        gaps.pop(node, None)  # a node has no entries for itself
        if gaps:
            missing = [f"{peer}: missing {'; '.join(what)}" for peer, what in sorted(gaps.items())]
            yield Found(
                (node,),
                f"{node} lacks VXLAN entries for {len(missing)} peer(s)",
                "For each peer flanneld installs a route to its subnet via flannel.1, a "
                "permanent neighbour entry for its VTEP and an FDB entry that says where to send "
                "the encapsulated packet; without them traffic to that peer's pods is lost.",
                [EvidenceLine.probe(node, "fdb", m) for m in missing[:4]],
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "restart flannel on the node (it re-adds every peer)",
                ),
            )


@rule("hostgw-not-l2", "critical")
def hostgw_not_l2(ev: Evidence) -> Iterator[Found]:
    conf = ev.net_conf() or {}
    if str((conf.get("Backend") or {}).get("Type", "")).lower() != "host-gw":
        return
    for node in ev.probed():
        connected = [
            r.dst
            for r in ev.fact(node, ROUTES) or []
            if r.scope == "link" and r.protocol == "kernel"
        ]
        far = [
            n
            for n in ev.nodes
            if n.name != node
            and n.internal_ip
            and not any(in_cidr(n.internal_ip, c) for c in connected if c and "/" in c)
        ]
        if far:
            yield Found(
                (node,),
                f"host-gw backend but {node} does not share an L2 network with "
                f"{', '.join(n.name for n in far[:5])}",
                "host-gw routes pod subnets via the peer's address as a next hop, which only "
                "works when all nodes are on one L2 segment.",
                [EvidenceLine.probe(node, "ip-route", f"connected: {', '.join(connected)}")],
                Fix("use the vxlan backend, or put all nodes on one L2 network"),
            )


@rule("mtu-mismatch", "warning")
def mtu_mismatch(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        devs = ev.fact(node, LINKS) or {}
        vxlan = devs.get("flannel.1")
        if vxlan is None:
            continue
        env = ev.fact(node, SUBNET_ENV) or {}
        env_mtu = int(env["FLANNEL_MTU"]) if env.get("FLANNEL_MTU", "").isdigit() else None
        problems = []
        if env_mtu is not None and env_mtu != vxlan.mtu:
            problems.append(
                EvidenceLine.probe(
                    node, "subnet-env", f"FLANNEL_MTU={env_mtu} but flannel.1 mtu {vxlan.mtu}"
                )
            )
        bridge = devs.get("cni0")
        if bridge is not None and bridge.mtu > vxlan.mtu:
            problems.append(
                EvidenceLine.probe(
                    node, "ip-addr", f"cni0 mtu {bridge.mtu} > flannel.1 mtu {vxlan.mtu}"
                )
            )
        parent = devs.get(vxlan.parent or "eth0")
        if parent is not None and vxlan.mtu > parent.mtu - 50:
            problems.append(
                EvidenceLine.probe(
                    node,
                    "ip-addr",
                    f"flannel.1 mtu {vxlan.mtu} > {parent.name} mtu {parent.mtu} - 50",
                )
            )
        if problems:
            yield Found(
                (node,),
                f"MTU mismatch on {node}",
                "VXLAN adds 50 bytes; pods must use the flannel.1 MTU (underlay MTU - 50). A "
                "larger pod or bridge MTU makes big packets vanish while pings and small "
                "requests work (TLS handshakes and large responses hang).",
                problems,
                Fix.restart(
                    ev.flannel_namespace(),
                    [node],
                    "set FLANNEL_MTU / the pods' MTU to the flannel.1 MTU and recreate the pods",
                ),
            )


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
