"""Rules about forwarding on the node: iptables backends, the FORWARD policy, ip_forward."""

from __future__ import annotations

from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence, matching_lines
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.node_facts import FILTER_TABLE, IP_FORWARD, LEGACY_RULES
from bot.diagnosis.rule import Found, rule


@rule("iptables-backend-mismatch", "warning")
def iptables_backend_mismatch(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        version = ev.probe(node, "iptables-version")
        legacy = ev.fact(node, LEGACY_RULES)
        if version is None or legacy is None:
            continue
        rules = legacy.matching(r"^-A .*(KUBE-|FLANNEL)", 3)
        if "nf_tables" in version.stdout and rules:
            yield Found(
                (node,),
                f"{node} has flannel/kube-proxy rules in both iptables backends",
                "The node's iptables is nf_tables but rules also live in the legacy backend; "
                "components using different backends do not see each other's rules.",
                [
                    EvidenceLine.probe(node, "iptables-version", version.stdout),
                    EvidenceLine.probe(node, "iptables-legacy", "\n".join(rules)),
                ],
                Fix(
                    "make every component use the same backend (update-alternatives --set "
                    "iptables ...), flush the other, restart kube-proxy and flannel"
                ),
            )


@rule("forward-drop", "critical")
def forward_drop(ev: Evidence) -> Iterator[Found]:
    net = str(ev.network() or "10.244.0.0/16")
    for node in ev.probed():
        table = ev.fact(node, FILTER_TABLE)
        if table is None or table.policies.get("FORWARD") != "DROP":
            continue
        if table.accepts(net, "-s") or table.accepts(net, "-d"):
            continue
        out = ev.probe(node, "iptables-filter")
        flannel_rules = matching_lines(out.stdout if out else "", r"FLANNEL-FWD", 3)
        yield Found(
            (node,),
            f"FORWARD policy DROP on {node} with no accept rule for {net}",
            "Pod traffic between nodes is forwarded between cni0 and flannel.1; a DROP "
            "policy (often set by Docker) without flannel's FLANNEL-FWD accepts drops it.",
            [
                EvidenceLine.probe(node, "iptables-filter", ":FORWARD DROP"),
                EvidenceLine.probe(
                    node, "iptables-filter", "\n".join(flannel_rules) or "no FLANNEL-FWD rules"
                ),
            ],
            Fix(
                f"iptables -A FORWARD -s {net} -j ACCEPT; iptables -A FORWARD -d {net} -j "
                "ACCEPT (flanneld re-adds its rules when restarted)",
                "node.fix-forward-policy",
                {"node": node},
            ),
        )


@rule("ip-forward-disabled", "critical")
def ip_forward_disabled(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        if ev.fact(node, IP_FORWARD) == "0":
            yield Found(
                (node,),
                f"IP forwarding is off on {node}",
                "The node must route pod traffic between cni0 and flannel.1; with "
                "net.ipv4.ip_forward=0 pods on this node cannot reach other nodes' pods.",
                [EvidenceLine.probe(node, "ip-forward", "0")],
                Fix(
                    "sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d",
                    "node.fix-br-netfilter",
                    {"node": node},
                ),
            )
