"""Rules about pod subnets: podCIDRs missing, exhausted, outside flannel's Network, overlapping."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence, matching_lines
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.node_facts import in_cidr
from bot.diagnosis.rule import Found, rule


@rule("podcidr-not-assigned", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def podcidr_not_assigned(ev: Evidence) -> Iterator[Found]:
    logs = {
        p.node: (s, matching_lines(t, r"pod cidr not assigned", 1)) for p, s, t in ev.flannel_logs()
    }
    for node in ev.nodes:
        source, hit = logs.get(node.name, ("", []))
        if node.pod_cidr and not hit:
            continue
        lines = [EvidenceLine(f"API: node {node.name}", "spec.podCIDR is empty")]
        if hit:
            lines.append(EvidenceLine(source, hit[0]))
        net = ev.network()
        yield Found(
            (node.name,),
            f"node {node.name} has no podCIDR",
            "With the kube subnet manager flanneld takes the node's subnet from spec.podCIDR, "
            "which kube-controller-manager assigns only with --allocate-node-cidrs and "
            "--cluster-cidr; without it flanneld cannot acquire a lease and exits.",
            lines,
            Fix(
                "run kube-controller-manager with --allocate-node-cidrs=true "
                f"--cluster-cidr={net or '10.244.0.0/16'} (kubeadm: "
                "--pod-network-cidr), or set the node's spec.podCIDR once"
            ),
        )


@rule("subnet-lease-exhausted", "critical")
def subnet_lease_exhausted(ev: Evidence) -> Iterator[Found]:
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


@rule("network-cidr-mismatch", "critical")
def network_cidr_mismatch(ev: Evidence) -> Iterator[Found]:
    net = ev.network()
    if net is None:
        return
    wrong = [
        n
        for n in ev.nodes
        if n.pod_cidr and not ipaddress.IPv4Network(n.pod_cidr, strict=False).subnet_of(net)
    ]
    if wrong:
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
            ],
            Fix(
                "make net-conf.json Network equal the cluster CIDR (kubeadm "
                "--pod-network-cidr), then restart flannel"
            ),
        )


@rule("subnet-overlap", "critical")
def subnet_overlap(ev: Evidence) -> Iterator[Found]:
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
