"""The documented, read-only probe set run on every node during `diagnose`.

Each probe is an argv with a stable id. Support bundles store one file per probe
(`probes/<node>/<id>.txt`), and each can be produced by hand on a node with the command shown by
`flannel-bot diagnose --probes`, so a bundle can be assembled without the bot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    id: str
    argv: tuple[str, ...]
    why: str


PROBES: tuple[Probe, ...] = (
    Probe(
        "bridge-nf-call-iptables",
        ("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "br_netfilter loaded and bridged traffic passing iptables (flanneld checks this file)",
    ),
    Probe(
        "bridge-nf-call-ip6tables",
        ("cat", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        "the IPv6 counterpart",
    ),
    Probe(
        "ip-forward",
        ("cat", "/proc/sys/net/ipv4/ip_forward"),
        "the node routes pod traffic between cni0 and flannel.1",
    ),
    Probe(
        "kernel-modules",
        ("ls", "-d", "/sys/module/br_netfilter", "/sys/module/vxlan"),
        "br_netfilter and vxlan available (loaded or built in)",
    ),
    Probe(
        "subnet-env",
        ("cat", "/run/flannel/subnet.env"),
        "the lease flanneld wrote; the flannel CNI plugin reads it for every pod",
    ),
    Probe(
        "cni-config",
        (
            "find",
            "/etc/cni/net.d",
            "-maxdepth",
            "1",
            "-type",
            "f",
            "-printf",
            "==> %p %s\\n",
            "-exec",
            "cat",
            "{}",
            ";",
        ),
        "every CNI config file with its size and content; the first in sort order wins",
    ),
    Probe("cni-bin", ("ls", "-1", "/opt/cni/bin"), "the CNI plugin binaries"),
    Probe(
        "ipam",
        (
            "find",
            "/var/lib/cni/networks",
            "-type",
            "f",
            "-printf",
            "==> %p\\n",
            "-exec",
            "cat",
            "{}",
            ";",
        ),
        "host-local IPAM reservations (one file per IP, holding the sandbox id)",
    ),
    Probe(
        "ip-addr",
        ("ip", "-d", "-j", "addr", "show"),
        "addresses, MTUs and VXLAN details of cni0, flannel.1 and the uplink",
    ),
    Probe("ip-route", ("ip", "-j", "route", "show"), "routes to peer pod subnets"),
    Probe(
        "ip-route-local",
        ("ip", "-j", "route", "show", "table", "local"),
        "local routes (a stale `local 10.96.0.1 dev kube-ipvs0` hijacks the API service)",
    ),
    Probe(
        "ip-neigh",
        ("ip", "-j", "neigh", "show", "dev", "flannel.1"),
        "permanent neighbour entries for peer VTEPs",
    ),
    Probe(
        "fdb",
        ("bridge", "-j", "fdb", "show", "dev", "flannel.1"),
        "VXLAN forwarding entries: where each peer VTEP MAC is sent",
    ),
    Probe(
        "iptables-filter",
        ("iptables-save", "-t", "filter"),
        "FORWARD policy, flannel's FLANNEL-FWD rules, anything dropping UDP 8472",
    ),
    Probe(
        "iptables-nat",
        ("iptables-save", "-t", "nat"),
        "flannel's masquerade rules and kube-proxy's service rules",
    ),
    Probe("iptables-version", ("iptables", "-V"), "the iptables backend (nf_tables or legacy)"),
    Probe(
        "iptables-legacy",
        ("iptables-legacy-save",),
        "rules left in the other backend (legacy) that the nft backend does not show",
    ),
    Probe(
        "offload",
        ("ethtool", "-k", "flannel.1"),
        "checksum offload on the VXLAN device (broken on some kernels/NICs)",
    ),
)
BY_ID = {p.id: p for p in PROBES}
