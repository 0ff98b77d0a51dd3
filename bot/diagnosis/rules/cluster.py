"""Rules about the cluster as a whole: nodes that do not answer, flannel missing or not allowed."""

from __future__ import annotations

from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence, matching_lines
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.rule import Found, rule


@rule("node-unreachable", "critical")
def node_unreachable(ev: Evidence) -> Iterator[Found]:
    for node, error in sorted(ev.unreachable.items()):
        yield Found(
            (node,),
            f"node {node} did not answer the probes",
            "Without the node's own view (sysctls, interfaces, routes, files) the node-side "
            "checks were skipped for it; the API-side findings still apply.",
            [EvidenceLine(f"{node}: ssh", error)],
            Fix(
                "check that the node is up and sshd answers (and that its host key in "
                "known_hosts is current), then run diagnose again"
            ),
        )


@rule("flannel-not-deployed", "critical", explains=("cni-config-invalid", "subnet-env-missing"))
def flannel_not_deployed(ev: Evidence) -> Iterator[Found]:
    if ev.flannel_daemonsets() or ev.flannel_pods():
        return
    yield Found(
        tuple(sorted(n.name for n in ev.nodes)),
        "no flannel DaemonSet or pods in kube-flannel or kube-system",
        "Without flanneld no node gets a subnet lease or a CNI config, so the kubelet reports "
        "NetworkPluginNotReady and every new pod stays in ContainerCreating.",
        [
            EvidenceLine("API: daemonsets in kube-flannel, kube-system", "no flannel DaemonSet"),
            *[
                EvidenceLine(f"API: node {n.name}", f"Ready={n.ready} {n.ready_reason}".strip())
                for n in ev.nodes
                if not n.ready
            ][:3],
        ],
        Fix(
            "kubectl apply -f https://github.com/flannel-io/flannel/releases/latest/download/"
            "kube-flannel.yml (with Network matching the cluster's pod CIDR)",
            "flannel.repair",
            {},
        ),
    )


@rule("flannel-rbac-missing", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def flannel_rbac_missing(ev: Evidence) -> Iterator[Found]:
    pods = [
        (p, s, matching_lines(t, r"forbidden.*serviceaccount|is forbidden"))
        for p, s, t in ev.flannel_logs()
    ]
    hits = [(p, s, m) for p, s, m in pods if m]
    ns = ev.flannel_namespace()
    denied = (
        ev.rbac.readable
        and ev.flannel_daemonsets()
        and not ev.rbac.allows(ns, "flannel", "get", "pods")
    )
    if not hits and not denied:
        return
    lines = [EvidenceLine(s, m[-1]) for _, s, m in hits[:3]]
    if denied:
        lines.append(
            EvidenceLine(
                "API: clusterrolebindings",
                f"no binding gives {ns}/flannel `get pods` "
                "(ClusterRole/ClusterRoleBinding `flannel` missing)",
            )
        )
    nodes = sorted({p.node for p, _, _ in hits} or {p.node for p in ev.flannel_pods()})
    yield Found(
        tuple(nodes),
        "flannel's ServiceAccount may not read its pod and nodes",
        "flanneld reads its own pod spec and the Node objects (kube subnet manager); without "
        "the flannel ClusterRole and its binding the API answers 403 and flanneld exits.",
        lines,
        Fix(
            "re-apply the ClusterRole and ClusterRoleBinding `flannel` from the "
            "kube-flannel manifest",
            "flannel.repair",
            {},
        ),
    )
