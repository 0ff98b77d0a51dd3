"""Rules about pod subnets: podCIDRs missing, exhausted, outside flannel's Network, overlapping."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.node_facts import ROUTES, SUBNET_ENV, in_cidr
from flannel_bot.diagnosis.peer_tables import SortedNetworks, address_key, inside, network_of
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule, sighted_by_node


@rule("podcidr-not-assigned", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def podcidr_not_assigned(ev: Evidence) -> Iterator[Found]:
    seen = sighted_by_node(ev, "podcidr-not-assigned")
    net = ev.network()
    known = {n.name for n in ev.nodes}
    yield from inferred(
        ev,
        "podcidr-not-assigned",
        lambda node: f"node {node or 'a node'} has no podCIDR",
        PODCIDR_MECHANISM,
        lambda node: podcidr_fix(net),
        besides=known,
    )
    for node in ev.nodes:
        hits = seen.get(node.name, [])
        if node.pod_cidr and not hits:
            continue
        lines = [EvidenceLine(f"API: node {node.name}", "spec.podCIDR is empty")]
        if node.pod_cidr:
            lines = [EvidenceLine(f"API: node {node.name}", f"spec.podCIDR: {node.pod_cidr}")]
        lines += [quote(s) for s in hits[:2]]
        yield Found(
            (node.name,),
            f"node {node.name} has no podCIDR",
            PODCIDR_MECHANISM,
            lines,
            podcidr_fix(net),
            certainty="confirmed" if not node.pod_cidr else "inferred",
        )


@rule(
    "subnet-lease-exhausted",
    "critical",
    explains=("flannel-crashloop", "subnet-env-missing", "podcidr-not-assigned"),
)
def subnet_lease_exhausted(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "subnet-lease-exhausted",
        lambda node: f"flannel finds no free subnet for {node or 'a node'}",
        "Every node-sized subnet of flannel's Network is leased (etcd) or assigned (the "
        "cluster CIDR), so a new node gets none and flannel cannot start there.",
        lambda node: Fix(
            "enlarge the Network (and the cluster CIDR) or reduce --node-cidr-mask-size; "
            "remove leases and Node objects of nodes that are gone"
        ),
    )
    for e in ev.events:
        if e.reason == "CIDRNotAvailable":
            yield Found(
                (e.involved_name,),
                f"no pod subnet left for node {e.involved_name}",
                "The cluster CIDR has no free node-sized subnet left, so the new node gets no "
                "podCIDR and flannel cannot start there.",
                [EvidenceLine(f"API: event on node {e.involved_name}", e.message)],
                Fix(
                    "enlarge the cluster CIDR (and flannel's Network) or reduce "
                    "--node-cidr-mask-size; remove stale Node objects"
                ),
            )


@rule("network-cidr-mismatch", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def network_cidr_mismatch(ev: Evidence) -> Iterator[Found]:
    reported: set[str] = set()
    for node in ev.probed():
        env = ev.fact(node, SUBNET_ENV) or {}
        network, subnet = env.get("FLANNEL_NETWORK", ""), env.get("FLANNEL_SUBNET", "")
        if network and subnet and not in_cidr(subnet, network):
            reported.add(node)
            yield Found(
                (node,),
                f"{node}'s flannel subnet {subnet} is outside flannel's Network {network}",
                "flanneld leased the node a subnet outside the Network it routes and "
                "masquerades for (the node's podCIDR comes from another cluster CIDR), so "
                "traffic of its pods is neither routed as pod traffic nor NATed as it should.",
                [
                    EvidenceLine.probe(
                        node, "subnet-env", f"FLANNEL_NETWORK={network} FLANNEL_SUBNET={subnet}"
                    )
                ],
                Fix(
                    "make flannel's Network equal the cluster CIDR that assigns the podCIDRs "
                    "(kubeadm --pod-network-cidr), then restart flannel"
                ),
            )
            break
    net = ev.network()
    wrong = [
        n
        for n in ev.nodes
        if net is not None
        and n.pod_cidr
        and ":" not in n.pod_cidr
        and not ipaddress.IPv4Network(n.pod_cidr, strict=False).subnet_of(net)
    ]
    if wrong and not reported:
        reported.update(n.name for n in wrong)
        yield Found(
            tuple(n.name for n in wrong),
            f"node podCIDRs outside flannel's Network {net}",
            "flannel's net-conf.json Network must contain every node's podCIDR (the cluster "
            "CIDR); otherwise routes and masquerading are built for the wrong range.",
            [
                EvidenceLine("API: configmap kube-flannel-cfg net-conf.json", f"Network: {net}"),
                *[
                    EvidenceLine(f"API: node {n.name}", f"spec.podCIDR: {n.pod_cidr}")
                    for n in wrong[:4]
                ],
                *[quote(s) for s in ev.sighted("network-cidr-mismatch")[:1]],
            ],
            Fix(
                "make net-conf.json Network equal the cluster CIDR (kubeadm "
                "--pod-network-cidr), then restart flannel"
            ),
        )
    if reported:
        return
    yield from inferred(
        ev,
        "network-cidr-mismatch",
        lambda node: f"flannel's Network does not contain {node or 'the node'}'s podCIDR",
        "flanneld refuses a lease for a podCIDR outside its configured Network.",
        lambda node: Fix(
            "make flannel's Network equal the cluster CIDR (kubeadm --pod-network-cidr, "
            "k3s/RKE2 --cluster-cidr), then restart flannel"
        ),
    )


@rule("subnet-overlap", "critical")
def subnet_overlap(ev: Evidence) -> Iterator[Found]:
    wanted: SortedNetworks | None = None
    for name in ev.probed():
        routes = ev.fact(name, ROUTES) or []
        flannel = [r.dst for r in routes if r.dev.startswith("flannel") and "/" in r.dst]
        table = ev.peer_table(name, "ip-route")
        for r in routes:
            if r.dev.startswith(("flannel", "cni0")) or "/" not in r.dst or r.scope != "link":
                continue
            network = network_of(r.dst)
            if network is None:
                continue
            shadowed = [d for d in flannel if inside(d.split("/")[0], network)]
            if table is not None:
                # the peers' routes the reduction left out (every wanted one it did not miss),
                # merged with the rest in address order, the order `ip route` lists them in
                if wanted is None:
                    wanted = SortedNetworks(ev.peers_wanted().routes)
                elided = [d for d in wanted.within(network) if d not in table.missing]
                shadowed = sorted(
                    shadowed + elided, key=lambda d: address_key(d.split("/")[0]) or (0, 0)
                )
            if shadowed:
                yield Found(
                    (name,),
                    f"{r.dev}'s network {r.dst} on {name} overlaps flannel's pod subnets",
                    "A local network (docker0, a VPN, the host's LAN) that contains pod "
                    "subnets makes the node send part of the pod traffic to the wrong device.",
                    [
                        EvidenceLine.probe(
                            name,
                            "ip-route",
                            f"{r.dst} dev {r.dev}; flannel: {', '.join(shadowed[:3])}",
                        )
                    ],
                    Fix(
                        f"move {r.dev}'s network out of the pod network (docker: --bip), or "
                        "choose a flannel Network that overlaps nothing on the hosts"
                    ),
                )
                break
    net = ev.network()
    seen: dict[str, str] = {}
    for node in ev.nodes:
        if net is not None and node.internal_ip and in_cidr(node.internal_ip, str(net)):
            yield Found(
                (node.name,),
                f"pod network {net} overlaps node {node.name}'s address {node.internal_ip}",
                "When the pod network contains host addresses, routes to pods shadow routes to "
                "nodes and traffic goes to the wrong place.",
                [
                    EvidenceLine(f"API: node {node.name}", f"InternalIP {node.internal_ip}"),
                    EvidenceLine("API: configmap kube-flannel-cfg", f"Network: {net}"),
                ],
                Fix("choose a pod network that does not overlap the hosts' networks"),
            )
        if node.pod_cidr:
            if node.pod_cidr in seen:
                yield Found(
                    (seen[node.pod_cidr], node.name),
                    f"nodes {seen[node.pod_cidr]} and {node.name} share podCIDR {node.pod_cidr}",
                    "Two nodes with the same pod subnet give out the same pod addresses.",
                    [
                        EvidenceLine(f"API: node {n}", f"spec.podCIDR: {node.pod_cidr}")
                        for n in (seen[node.pod_cidr], node.name)
                    ],
                    Fix("delete and re-join one of the nodes so it gets a fresh podCIDR"),
                )
            seen[node.pod_cidr] = node.name


@rule("subnet-lease-lost", "critical", explains=("flannel-crashloop",))
def subnet_lease_lost(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "subnet-lease-lost",
        lambda node: f"flanneld lost its subnet lease on {node or 'a node'}",
        "With the etcd subnet manager a lease that expires or is revoked (etcd restored, the "
        "node away past its TTL) makes flanneld shut down; on restart it may get another "
        "subnet, and pods keep addresses of the old one until recreated.",
        lambda node: Fix.restart(
            ev.flannel_namespace(),
            [node] if node else [],
            "restart flannel to acquire a lease, then recreate the node's pods if its subnet "
            "changed; find why renewals failed (etcd health)",
        ),
    )


PODCIDR_MECHANISM = (
    "With the kube subnet manager flanneld takes the node's subnet from spec.podCIDR, which "
    "kube-controller-manager assigns only with --allocate-node-cidrs and --cluster-cidr; "
    "without it flanneld cannot acquire a lease and exits."
)


def podcidr_fix(net: object) -> Fix:
    return Fix(
        "run kube-controller-manager with --allocate-node-cidrs=true "
        f"--cluster-cidr={net or '10.244.0.0/16'} (kubeadm: --pod-network-cidr; k3s: "
        "--cluster-cidr), or set the node's spec.podCIDR once"
    )
