"""Rules about the cluster as a whole: nodes that do not answer, flannel missing, not allowed, or
unable to start (its manifest, image, privileges, a bug of its release)."""

from __future__ import annotations

from collections.abc import Iterator

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.releases import defects
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule, sighted_by_node

CRASH_EFFECTS = ("flannel-crashloop", "subnet-env-missing")


@rule("node-unreachable", "critical")
def node_unreachable(ev: Evidence) -> Iterator[Found]:
    for node, error in sorted(ev.unreachable.items()):
        # the pod transport ([nodes] access = "pod") names its node-exec pod in every error
        by_pod = "node-exec pod" in error
        yield Found(
            (node,),
            f"node {node} did not answer the probes",
            "Without the node's own view (sysctls, interfaces, routes, files) the node-side "
            "checks were skipped for it; the API-side findings still apply.",
            [EvidenceLine(f"{node}: {'pod' if by_pod else 'ssh'}", error)],
            Fix(
                "fix what stopped the node-exec pod (the reason above: the node's kubelet, "
                "taints, image pull, PodSecurity or RBAC in the bot's namespace), then run "
                "diagnose again"
                if by_pod
                else "check that the node is up and sshd answers (and that its host key in "
                "known_hosts is current), then run diagnose again"
            ),
        )


@rule("flannel-not-in-use", "info")
def flannel_not_in_use(ev: Evidence) -> Iterator[Found]:
    """A cluster that runs another network plugin: said once, and nothing is offered."""
    other = ev.other_cni()
    if not other or ev.flannel_pods() or ev.flannel_daemonsets() or ev.flannel_embedded():
        return
    yield Found(
        (),
        f"this cluster runs {other}, not flannel",
        "flannel-bot diagnoses flannel; with another network plugin in charge, none of its "
        "checks apply and none of its fixes may be used.",
        [EvidenceLine("API: pods", f"{other}'s node agent runs; no flannel DaemonSet or pods")],
        Fix(f"use {other}'s own troubleshooting; nothing here applies"),
    )


@rule("flannel-not-deployed", "critical", explains=("cni-config-invalid", "subnet-env-missing"))
def flannel_not_deployed(ev: Evidence) -> Iterator[Found]:
    if ev.flannel_daemonsets() or ev.flannel_pods() or ev.flannel_embedded() or ev.other_cni():
        return
    if ev.flannel_unread():  # absent from what was read is not absent: a gap says so
        return
    distribution = ev.distribution()
    lines = [
        EvidenceLine("API: daemonsets in kube-flannel, kube-system", "no flannel DaemonSet"),
        *[
            EvidenceLine(f"API: node {n.name}", f"Ready={n.ready} {n.ready_reason}".strip())
            for n in ev.nodes
            if not n.ready
        ][:3],
    ]
    if distribution == "k3s":
        fix = Fix(
            "k3s runs flannel inside its own process unless started with "
            "--flannel-backend=none: check k3s's flags (the k3s.io/node-args annotation) and "
            "`journalctl -u k3s`; never apply a flannel manifest beside it"
        )
    elif distribution == "rke2":
        fix = Fix(
            "RKE2 deploys its CNI from the rke2-canal (default) or rke2-flannel HelmChart: "
            "check `--cni` in /etc/rancher/rke2/config.yaml and the helm-install job pods"
        )
    else:
        fix = Fix(
            "kubectl apply -f https://github.com/flannel-io/flannel/releases/latest/download/"
            "kube-flannel.yml (with Network matching the cluster's pod CIDR)",
            "flannel.repair",
            {},
        )
    yield Found(
        tuple(sorted(n.name for n in ev.nodes)),
        "no flannel DaemonSet or pods in kube-flannel or kube-system",
        "Without flanneld no node gets a subnet lease or a CNI config, so the kubelet reports "
        "NetworkPluginNotReady and every new pod stays in ContainerCreating.",
        lines,
        fix,
    )


@rule("flannel-rbac-missing", "critical", explains=CRASH_EFFECTS)
def flannel_rbac_missing(ev: Evidence) -> Iterator[Found]:
    seen = sighted_by_node(ev, "flannel-rbac-missing")
    ns = ev.flannel_namespace()
    denied = (
        ev.rbac.readable
        and ev.flannel_daemonsets()
        and not ev.rbac.allows(ns, "flannel", "get", "pods")
    )
    if not seen and not denied:
        return
    lines = [quote(s) for found in seen.values() for s in found][:3]
    if denied:
        lines.append(
            EvidenceLine(
                "API: clusterrolebindings",
                f"no binding gives {ns}/flannel `get pods` "
                "(ClusterRole/ClusterRoleBinding `flannel` missing)",
            )
        )
    nodes = sorted({n for n in seen if n} or {p.node for p in ev.flannel_pods()})
    embedded = ev.flannel_embedded()
    yield Found(
        tuple(nodes),
        "flannel's ServiceAccount may not read its pod and nodes",
        "flanneld reads its own pod spec and the Node objects (kube subnet manager); without "
        "the flannel ClusterRole and its binding the API answers 403 and flanneld exits.",
        lines,
        Fix(
            "k3s grants its embedded flannel its own rights: check the k3s server's RBAC "
            "bootstrap (`journalctl -u k3s`)"
        )
        if embedded
        else Fix(
            "re-apply the ClusterRole and ClusterRoleBinding `flannel` from the "
            "kube-flannel manifest",
            "flannel.repair",
            {},
        ),
        certainty="confirmed" if denied else "inferred",
    )


@rule("flannel-auth-failed", "critical", explains=(*CRASH_EFFECTS, "etcd-unreachable"))
def flannel_auth_failed(ev: Evidence) -> Iterator[Found]:
    def certificate(node: str) -> bool:
        return any(
            "tls:" in s.line or "x509:" in s.line for s in ev.sighted("flannel-auth-failed", node)
        )

    def fix(node: str) -> Fix:
        if certificate(node) or not all(
            s.message.restart_helps for s in ev.sighted("flannel-auth-failed", node)
        ):
            return Fix(
                "renew the certificate the quoted line names (flanneld's client certificate "
                "for etcd or the API, or the server's), or correct the node's clock; a restart "
                "presents the same credential"
            )
        return Fix.restart(
            ev.flannel_namespace(),
            [node] if node else [p.node for p in ev.flannel_pods()],
            "recreate the flannel pod so it gets a fresh token; if it persists, check the "
            "ServiceAccount signing keys and the node's clock",
        )

    yield from inferred(
        ev,
        "flannel-auth-failed",
        lambda node: (
            f"etcd or the API server rejects flannel's certificate on {node or 'a node'}"
            if certificate(node)
            else f"the API refuses flannel's credentials (401 Unauthorized) on {node or 'a node'}"
        ),
        "flanneld authenticates with its ServiceAccount token, or with a client certificate "
        "to etcd; a credential the server no longer accepts (rotated signing keys, a restored "
        "cluster, a certificate past its date, a clock far off) makes every call fail and "
        "flanneld cannot read or renew its lease.",
        fix,
    )


@rule("flannel-manifest-invalid", "critical", explains=CRASH_EFFECTS)
def flannel_manifest_invalid(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "flannel-manifest-invalid",
        lambda node: "flanneld's DaemonSet gives it an argument or environment it cannot use",
        "A hand-edited manifest (an unknown flag, POD_NAME/POD_NAMESPACE missing, no "
        "ServiceAccount token mounted) stops flanneld before it starts; an unknown flag even "
        "makes it print its usage and exit 0, so the pod restarts without an error.",
        lambda node: Fix(
            "compare the DaemonSet's args, env and volumes with the kube-flannel.yml of its "
            "release, and correct them"
        ),
    )


@rule("flannel-image-unavailable", "critical", explains=CRASH_EFFECTS)
def flannel_image_unavailable(ev: Evidence) -> Iterator[Found]:
    found: set[str] = set()
    for pod in ev.flannel_pods():
        stuck = [c for c in pod.containers if c.reason in ("ImagePullBackOff", "ErrImagePull")]
        if not stuck:
            continue
        found.add(pod.node)
        c = stuck[0]
        lines = [
            EvidenceLine(
                f"API: pod {pod.namespace}/{pod.name}", f"{c.name} ({c.image}): {c.reason}"
            )
        ]
        lines += [quote(s) for s in ev.sighted("flannel-image-unavailable", pod.node)[:1]]
        yield Found(
            (pod.node,),
            f"{c.image} cannot be pulled on {pod.node}",
            "kubelet cannot pull an image of the flannel pod (a tag that was never published, "
            "a registry the node cannot reach or is rate-limited by), so flannel never starts "
            "and the node stays NotReady.",
            lines,
            Fix(
                "use an image tag that exists (the released kube-flannel.yml's), or make the "
                "registry reachable from the node (mirror, pull secret)"
            ),
        )
    yield from inferred(
        ev,
        "flannel-image-unavailable",
        lambda node: f"a flannel image cannot be pulled on {node or 'a node'}",
        "kubelet cannot pull an image of the flannel pod, so flannel never starts.",
        lambda node: Fix("use an image tag that exists, or make the registry reachable"),
        besides=found,
    )


@rule("flannel-insufficient-privileges", "critical", explains=CRASH_EFFECTS)
def flannel_insufficient_privileges(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "flannel-insufficient-privileges",
        lambda node: f"flanneld lacks the privileges it needs on {node or 'a node'}",
        "flanneld creates network devices and iptables rules on the host: without root, "
        "privileged mode or the NET_ADMIN and NET_RAW capabilities (CRI-O drops NET_RAW by "
        "default), or without /dev/net/tun for the udp backend, those calls are refused.",
        lambda node: Fix(
            "run the kube-flannel container privileged (or with NET_ADMIN and NET_RAW, and "
            "/dev/net/tun mounted for udp), as the released manifest does"
        ),
    )


@rule("host-path-denied", "critical", explains=(*CRASH_EFFECTS, "cni-config-invalid"))
def host_path_denied(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "host-path-denied",
        lambda node: f"flannel may not write its host paths on {node or 'a node'}",
        "flannel's containers write /etc/cni/net.d, /opt/cni/bin and /run/flannel on the "
        "host; SELinux labels (container_t may not write them), a read-only file system or "
        "an unprivileged pod refuse those writes, so no CNI config or subnet.env appears.",
        lambda node: Fix(
            "give the paths the labels the container may write (or run flannel privileged, as "
            "the released manifest does); check `ausearch -m avc` on the node"
        ),
    )


@rule("flannel-bug", "critical", explains=CRASH_EFFECTS)
def flannel_bug(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "flannel-bug",
        lambda node: f"flanneld fails on a defect of its release on {node or 'a node'}",
        "The log shows a failure of flannel itself (a Go panic, a broken image, a known bug "
        "of the release in use), not of the node or the cluster: nothing on the node will "
        "cure it.",
        lambda node: Fix(
            "move to a flannel release without the defect (the quoted line and the upstream "
            "issue say which); a restart hits the same defect"
        ),
    )
    for node, defect, release, seen in defects(ev):
        yield Found(
            (node,),
            f"{node} runs flannel {release.text}, whose {defect.name} bites there",
            defect.effect,
            [EvidenceLine(release.where, release.text), seen],
            Fix(f"{defect.fix}; a restart hits the same defect ({defect.url})"),
        )
