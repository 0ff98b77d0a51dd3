"""Rules about the node's kernel: br_netfilter and the bridge sysctls, VXLAN support."""

from __future__ import annotations

from collections.abc import Iterator

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.node_facts import KERNEL_MODULES
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule, sighted_by_node


@rule(
    "br-netfilter-missing",
    "critical",
    explains=("flannel-crashloop", "subnet-env-missing", "ip-forward-disabled"),
)
def br_netfilter_missing(ev: Evidence) -> Iterator[Found]:
    seen = sighted_by_node(ev, "br-netfilter-missing")
    for node in sorted(set(ev.probed()) | {n for n in seen if n}):
        out = ev.probe(node, "bridge-nf-call-iptables")
        lines = []
        if out is not None and not out.ok:
            lines.append(
                EvidenceLine.probe(node, "bridge-nf-call-iptables", out.stderr or "missing")
            )
        elif out is not None and out.stdout.strip() == "0":
            lines.append(EvidenceLine.probe(node, "bridge-nf-call-iptables", "0"))
        confirmed = bool(lines)
        if out is not None and out.ok and out.stdout.strip() == "1":
            continue  # loaded and on now: the log line is history
        lines += [quote(s) for s in seen.get(node, [])[:2]]
        if lines:
            yield Found(
                (node,),
                f"br_netfilter is not loaded (or bridge-nf-call-iptables is off) on {node}",
                "Without br_netfilter, /proc/sys/net/bridge does not exist and bridged pod "
                "traffic bypasses iptables; flanneld checks bridge-nf-call-iptables at start "
                "and exits when it is missing, so the node never gets subnet.env.",
                lines,
                Fix(
                    "modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1 "
                    "net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.ip_forward=1; persist "
                    "in /etc/modules-load.d and /etc/sysctl.d; restart flannel",
                    "node.fix-br-netfilter",
                    {"node": node},
                ),
                certainty="confirmed" if confirmed else "inferred",
            )


@rule("vxlan-unsupported", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def vxlan_unsupported(ev: Evidence) -> Iterator[Found]:
    for node, seen in sorted(sighted_by_node(ev, "vxlan-unsupported").items()):
        modules = ev.fact(node, KERNEL_MODULES) if node else None
        if modules is not None and "vxlan" in modules:
            continue  # the module is there: the line meant something else
        mods = ev.probe(node, "kernel-modules") if node else None
        yield Found(
            (node,) if node else (),
            f"the kernel on {node or 'a node'} cannot create VXLAN devices",
            "The vxlan module is missing (minimal or custom kernels, Raspberry Pi and WSL "
            "images), so flanneld cannot create flannel.1 with the VXLAN backend.",
            [
                *[quote(s) for s in seen[:2]],
                *(
                    [EvidenceLine.probe(node, "kernel-modules", mods.stdout or mods.stderr)]
                    if mods
                    else []
                ),
            ],
            Fix(
                "install the kernel's extra modules (e.g. linux-modules-extra-$(uname -r)) and "
                "modprobe vxlan, or use the host-gw backend where nodes share an L2"
            ),
            certainty="confirmed" if modules is not None else "inferred",
        )


@rule("backend-prereq-missing", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def backend_prereq_missing(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "backend-prereq-missing",
        lambda node: f"the node lacks what flannel's backend needs on {node or 'a node'}",
        "The wireguard, ipsec and udp backends need more than VXLAN: the wireguard kernel "
        "module (kernel 5.6+ or a backport), strongSwan's charon, /dev/net/tun; without it "
        "flanneld cannot create its device and exits.",
        lambda node: Fix(
            "install the backend's prerequisite on every node (wireguard module or "
            "wireguard-tools, strongswan, the tun module) or choose the vxlan backend"
        ),
    )


@rule("conntrack-table-full", "warning")
def conntrack_table_full(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "conntrack-table-full",
        lambda node: f"the conntrack table is full on {node or 'a node'}",
        "Every NATed or Service connection needs a conntrack entry; when the table is full "
        "the kernel drops new connections at random, which looks like a flaky network.",
        lambda node: Fix(
            "raise net.netfilter.nf_conntrack_max (kube-proxy's conntrack settings) and look "
            "for what opens so many connections"
        ),
    )


@rule("neighbor-table-overflow", "warning")
def neighbor_table_overflow(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "neighbor-table-overflow",
        lambda node: f"the ARP/neighbour table overflows on {node or 'a node'}",
        "A node with many peers and pods needs more neighbour entries than the default "
        "gc_thresh allows; entries are dropped and traffic to some peers stalls.",
        lambda node: Fix(
            "raise net.ipv4.neigh.default.gc_thresh1/2/3 (e.g. 4096/8192/16384) and persist it"
        ),
    )
