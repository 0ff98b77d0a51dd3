"""Rules about flannel's own configuration: net-conf.json, dual-stack settings, its etcd store."""

from __future__ import annotations

from collections.abc import Iterator

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule

CRASH_EFFECTS = ("flannel-crashloop", "subnet-env-missing")
NETCONF_FIX = (
    "correct net-conf.json (a JSON object with Network as a CIDR and Backend.Type one of vxlan, "
    "host-gw, wireguard, udp, ipsec), then restart flannel: a restart alone reads the same file"
)


@rule("netconf-invalid", "critical", explains=CRASH_EFFECTS)
def netconf_invalid(ev: Evidence) -> Iterator[Found]:
    conf = ev.flannel_net_conf()
    confirmed: set[str] = set()
    cm = ev.flannel_configmap()
    if conf is not None and conf.problems and cm is not None:
        nodes = tuple(sorted({p.node for p in ev.flannel_pods() if p.node}))
        confirmed.update(nodes)
        lines = [
            EvidenceLine(f"API: configmap {cm.namespace}/{cm.name} net-conf.json", problem)
            for problem in conf.problems
        ]
        lines += [quote(s) for s in ev.sighted("netconf-invalid")[:2]]
        yield Found(
            nodes,
            f"flannel's net-conf.json is invalid: {conf.problems[0]}",
            "flanneld parses net-conf.json at start-up and exits on a config it cannot use, so "
            "no node gets a lease, subnet.env or routes.",
            lines,
            Fix(NETCONF_FIX),
        )
    yield from inferred(
        ev,
        "netconf-invalid",
        lambda node: f"flanneld cannot use its network config on {node or 'a node'}",
        "flanneld reads its network config (net-conf.json, its etcd key, or k3s's "
        "--flannel-backend) at start-up and exits on one it cannot use.",
        lambda node: Fix(NETCONF_FIX),
        besides=confirmed,
    )


@rule("dualstack-config-invalid", "critical", explains=CRASH_EFFECTS)
def dualstack_config_invalid(ev: Evidence) -> Iterator[Found]:
    conf = ev.flannel_net_conf()
    confirmed: set[str] = set()
    if conf is not None and not conf.problems:
        families = {
            n.name: {":" in c for c in n.pod_cidrs or ((n.pod_cidr,) if n.pod_cidr else ())}
            for n in ev.nodes
        }
        wrong = []
        for name, has in families.items():
            if not has:
                continue  # podcidr-not-assigned says so
            if conf.enable_ipv6 and True not in has:
                wrong.append((name, "EnableIPv6 is set but the node has no IPv6 podCIDR"))
            if conf.enable_ipv4 and False not in has:
                wrong.append((name, "IPv4 is enabled but the node has no IPv4 podCIDR"))
        if wrong:
            confirmed.update(n for n, _ in wrong)
            yield Found(
                tuple(sorted({n for n, _ in wrong})),
                "flannel's IPv4/IPv6 settings do not match the nodes' podCIDRs",
                "With EnableIPv6 (or IPv4 left on) flanneld needs a podCIDR of that family on "
                "every node; a node without one gets no lease and flanneld exits there.",
                [EvidenceLine(f"API: node {n}", why) for n, why in wrong[:4]]
                + [quote(s) for s in ev.sighted("dualstack-config-invalid")[:2]],
                Fix(
                    "make net-conf.json's EnableIPv4/EnableIPv6 and IPv6Network match the "
                    "cluster's --cluster-cidr families (and kubeadm's podSubnet)"
                ),
            )
    yield from inferred(
        ev,
        "dualstack-config-invalid",
        lambda node: f"flannel's IPv4/IPv6 settings do not fit {node or 'the node'}",
        "flanneld refuses a dual-stack set-up whose families disagree between net-conf.json, "
        "the node's podCIDRs and its interfaces.",
        lambda node: Fix(
            "make EnableIPv4/EnableIPv6/IPv6Network agree with the podCIDRs and give the "
            "chosen interface an address of each family"
        ),
        besides=confirmed,
    )


@rule("etcd-unreachable", "critical", explains=CRASH_EFFECTS)
def etcd_unreachable(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "etcd-unreachable",
        lambda node: f"flanneld cannot use its etcd store on {node or 'a node'}",
        "With the etcd subnet manager flanneld keeps its config and leases in etcd; when it "
        "cannot reach, authenticate to or watch etcd it cannot get or renew a lease.",
        lambda node: Fix(
            "check flanneld's --etcd-endpoints, certificates and etcd's health "
            "(`etcdctl endpoint health`)"
        ),
    )
