"""Rules about the node's kernel: br_netfilter and the bridge sysctls, VXLAN support."""

from __future__ import annotations

from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence, matching_lines
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.node_facts import KERNEL_MODULES
from bot.diagnosis.rule import Found, rule


@rule(
    "br-netfilter-missing",
    "critical",
    explains=("flannel-crashloop", "subnet-env-missing", "ip-forward-disabled"),
)
def br_netfilter_missing(ev: Evidence) -> Iterator[Found]:
    logs = {
        p.node: (s, matching_lines(t, r"Failed to check br_netfilter", 1))
        for p, s, t in ev.flannel_logs()
    }
    for node in sorted(set(ev.probed()) | {n for n, (_, h) in logs.items() if h}):
        out = ev.probe(node, "bridge-nf-call-iptables")
        lines = []
        if out is not None and not out.ok:
            lines.append(
                EvidenceLine.probe(node, "bridge-nf-call-iptables", out.stderr or "missing")
            )
        elif out is not None and out.stdout.strip() == "0":
            lines.append(EvidenceLine.probe(node, "bridge-nf-call-iptables", "0"))
        source, hit = logs.get(node, ("", []))
        if hit:
            lines.append(EvidenceLine(source, hit[0]))
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
            )


@rule("vxlan-unsupported", "critical")
def vxlan_unsupported(ev: Evidence) -> Iterator[Found]:
    for pod, source, text in ev.flannel_logs():
        hits = matching_lines(text, r"(?i)vxlan.*(operation not supported|not supported)", 1)
        modules = ev.fact(pod.node, KERNEL_MODULES)
        if hits and (modules is None or "vxlan" not in modules):
            mods = ev.probe(pod.node, "kernel-modules")
            yield Found(
                (pod.node,),
                f"the kernel on {pod.node} cannot create VXLAN devices",
                "The vxlan module is missing (minimal or custom kernels), so flanneld cannot "
                "create flannel.1 with the VXLAN backend.",
                [
                    EvidenceLine(source, hits[0]),
                    EvidenceLine.probe(
                        pod.node, "kernel-modules", mods.stdout if mods else "not probed"
                    ),
                ],
                Fix(
                    "install the kernel's extra modules (e.g. linux-modules-extra) and "
                    "modprobe vxlan, or use the host-gw backend where nodes share an L2"
                ),
            )
