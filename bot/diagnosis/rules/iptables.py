"""Rules about forwarding on the node: iptables backends, the FORWARD policy, ip_forward."""

from __future__ import annotations

from collections.abc import Iterator

from flannel_bot.diagnosis.evidence import Evidence, matching_lines
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.node_facts import FILTER_TABLE, IP_FORWARD, LEGACY_RULES, RuleTable
from flannel_bot.diagnosis.rule import Found, inferred, rule


@rule("iptables-backend-mismatch", "warning", explains=("iptables-rules-failed",))
def iptables_backend_mismatch(ev: Evidence) -> Iterator[Found]:
    reported: set[str] = set()
    for node in ev.probed():
        version = ev.probe(node, "iptables-version")
        legacy = ev.fact(node, LEGACY_RULES)
        if version is None or legacy is None:
            continue
        rules = legacy.matching(r"^-A .*(KUBE-|FLANNEL)", 3)
        if "nf_tables" in version.stdout and rules:
            reported.add(node)
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
    yield from inferred(
        ev,
        "iptables-backend-mismatch",
        lambda node: (
            f"flannel's iptables and the host's use different backends on {node or 'a node'}"
        ),
        "The host's iptables is nf_tables while the one in flannel's container (or "
        "kube-proxy's) is legacy, or the reverse: the tables one writes are not the tables "
        "the kernel path the other uses, so rules are missing or fail to apply.",
        lambda node: Fix(
            "run every component with the host's backend (a flannel release whose image "
            "detects it: v0.12+), or switch the host (update-alternatives --set iptables "
            "/usr/sbin/iptables-legacy), then restart kube-proxy and flannel"
        ),
        besides=reported,
    )


@rule("forward-drop", "critical")
def forward_drop(ev: Evidence) -> Iterator[Found]:
    net = str(ev.network() or "10.244.0.0/16")
    for node in ev.probed():
        table = ev.fact(node, FILTER_TABLE)
        if table is None:
            continue
        out = ev.probe(node, "iptables-filter")
        flannel_rules = matching_lines(out.stdout if out else "", r"FLANNEL-FWD", 3)
        blocker = ""
        if table.policies.get("FORWARD") == "DROP" and not (
            table.accepts(net, "-s") or table.accepts(net, "-d")
        ):
            shown = ":FORWARD DROP"
        elif blocker := catch_all(table, "FORWARD", before_accepting=net):
            shown = blocker
        else:
            continue
        yield Found(
            (node,),
            f"FORWARD policy DROP on {node} with no accept rule for {net}"
            if not blocker
            else f"a catch-all {blocker.split(' -j ')[-1].split()[0]} in FORWARD on {node} "
            f"comes before any accept rule for {net}",
            "Pod traffic between nodes is forwarded between cni0 and flannel.1; a DROP "
            "policy (often set by Docker) or a catch-all REJECT (firewalld) ahead of "
            "flannel's accepts throws it away.",
            [
                EvidenceLine.probe(node, "iptables-filter", shown),
                EvidenceLine.probe(
                    node, "iptables-filter", "\n".join(flannel_rules) or "no FLANNEL-FWD rules"
                ),
            ],
            Fix(
                f"iptables -I FORWARD -s {net} -j ACCEPT; iptables -I FORWARD -d {net} -j "
                "ACCEPT (or let firewalld trust the pod network); flanneld re-adds its rules "
                "when restarted",
                "node.fix-forward-policy" if not blocker else None,
                {"node": node} if not blocker else {},
            ),
        )


def catch_all(table: RuleTable, chain: str, before_accepting: str) -> str:
    """The first rule of `chain` that rejects or drops everything, when it comes before any
    rule accepting the pod network (firewalld's `-A FORWARD -j REJECT ...`); else ""."""
    net = before_accepting
    for rule_line in table.rules:
        if not rule_line.startswith(f"-A {chain} "):
            continue
        if (net in rule_line and "-j ACCEPT" in rule_line) or "-j FLANNEL-FWD" in rule_line:
            return ""
        words = rule_line.split()
        target = words[words.index("-j") + 1] if "-j" in words else ""
        matches = [
            w
            for w in words[2:]
            if w.startswith("-") and w not in ("-j", "-m", "--comment", "--reject-with")
        ]
        if target in ("REJECT", "DROP") and not matches:
            return rule_line
    return ""


@rule("host-firewall-reject", "critical")
def host_firewall_reject(ev: Evidence) -> Iterator[Found]:
    net = str(ev.network() or "10.244.0.0/16")
    reported: set[str] = set()
    for node in ev.probed():
        table = ev.fact(node, FILTER_TABLE)
        blocker = catch_all(table, "INPUT", before_accepting=net) if table else ""
        if blocker:
            reported.add(node)
            yield Found(
                (node,),
                f"the host firewall on {node} rejects what pods send to the node itself",
                HOST_FIREWALL,
                [EvidenceLine.probe(node, "iptables-filter", blocker)],
                Fix(HOST_FIREWALL_FIX),
            )
    yield from inferred(
        ev,
        "host-firewall-reject",
        lambda node: f"a host firewall rejects pod traffic on {node or 'a node'}",
        HOST_FIREWALL,
        lambda node: Fix(HOST_FIREWALL_FIX),
        besides=reported,
    )


HOST_FIREWALL = (
    "A host firewall (firewalld, ufw, a hardening baseline) that rejects or drops whatever it "
    "does not know catches pod traffic flannel and kube-proxy do not open: pods reaching their "
    "own node (kubelet, DNS on the host network, the API via a Service) get `no route to "
    "host` (icmp-host-prohibited) or time out."
)
HOST_FIREWALL_FIX = (
    "let the firewall trust the pod network and flannel's devices (firewalld: add cni0 and "
    "flannel.1 to the trusted zone, or a rich rule for the pod CIDR), or remove the catch-all"
)


@rule("iptables-rules-failed", "critical")
def iptables_rules_failed(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "iptables-rules-failed",
        lambda node: f"flannel cannot program iptables on {node or 'a node'}",
        "flanneld (and portmap, and kube-proxy) install their masquerade and forward rules "
        "with iptables or nftables; when the binary is missing, the kernel lacks the tables, "
        "or the rules cannot be applied, traffic leaves un-NATed or is not forwarded.",
        lambda node: Fix(
            "make iptables work on the node (install it; one backend, nf_tables or legacy, for "
            "every component; the kernel's nf_tables/xt modules), then restart flannel"
        ),
    )


@rule("ip-forward-disabled", "critical")
def ip_forward_disabled(ev: Evidence) -> Iterator[Found]:
    reported: set[str] = set()
    for node in ev.probed():
        if ev.fact(node, IP_FORWARD) == "0":
            reported.add(node)
            yield Found(
                (node,),
                f"IP forwarding is off on {node}",
                FORWARDING,
                [EvidenceLine.probe(node, "ip-forward", "0")],
                forwarding_fix(node),
            )
    yield from inferred(
        ev,
        "ip-forward-disabled",
        lambda node: f"IP forwarding cannot be turned on on {node or 'a node'}",
        FORWARDING,
        forwarding_fix,
        besides=reported,
    )


FORWARDING = (
    "The node must route pod traffic between cni0 and flannel.1; with net.ipv4.ip_forward=0 "
    "(or a read-only /proc/sys the bridge plugin cannot turn it on in) pods on this node "
    "cannot reach other nodes' pods."
)


def forwarding_fix(node: str) -> Fix:
    return Fix.on_node(
        "sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d",
        "node.fix-br-netfilter",
        node,
    )
