"""Rules about pods: flannel's own pods (killed, unscheduled, crash-looping) and what new pods'
sandboxes fail on (no subnet.env, host-local out of addresses)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from flannel_bot.diagnosis.evidence import Evidence, matching_lines
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.node_facts import IPAM, reserved_address
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule, sighted_by_node


@rule("flannel-oomkilled", "warning", explains=("flannel-crashloop",))
def flannel_oomkilled(ev: Evidence) -> Iterator[Found]:
    reported: set[str] = set()
    for pod in ev.flannel_pods():
        oom = [c for c in pod.containers if "OOMKilled" in (c.last_reason, c.reason)]
        if oom:
            reported.add(pod.node)
            yield Found(
                (pod.node,),
                f"{pod.name} on {pod.node} was OOMKilled",
                OOM_MECHANISM,
                [
                    EvidenceLine(
                        f"API: pod {pod.namespace}/{pod.name}",
                        f"{oom[0].name} last terminated: OOMKilled",
                    ),
                    *[quote(s) for s in ev.sighted("flannel-oomkilled", pod.node)[:1]],
                ],
                OOM_FIX,
            )
    yield from inferred(
        ev,
        "flannel-oomkilled",
        lambda node: f"the kernel killed flanneld for its memory limit on {node or 'a node'}",
        OOM_MECHANISM,
        lambda node: OOM_FIX,
        besides=reported,
    )


OOM_MECHANISM = (
    "flanneld was killed for exceeding its memory limit (large clusters, many events); it "
    "restarts and is killed again, and the node's routes go stale in between."
)
OOM_FIX = Fix("raise the kube-flannel container's memory limit in the DaemonSet (e.g. 256Mi)")


@rule("flannel-not-scheduled", "critical")
def flannel_not_scheduled(ev: Evidence) -> Iterator[Found]:
    if not ev.flannel_daemonsets():
        return
    if any((d.namespace, "pods") in ev.unread for d in ev.flannel_daemonsets()):
        return  # its pods were not all read: one missing from them is not known to be missing
    have = ev.flannel_pods_by_node()
    missing = [n for n in ev.nodes if n.name not in have]
    if not missing:
        return
    lines = [
        EvidenceLine(
            f"API: node {n.name}",
            "taints: " + (", ".join(f"{t.key}={t.value}:{t.effect}" for t in n.taints) or "none"),
        )
        for n in missing[:5]
    ]
    ds = ev.flannel_daemonsets()[0]
    lines.append(
        EvidenceLine(
            f"API: daemonset {ds.namespace}/{ds.name}",
            f"desired {ds.desired}, current {ds.current}, ready {ds.ready}",
        )
    )
    yield Found(
        tuple(n.name for n in missing),
        f"no flannel pod on {', '.join(n.name for n in missing)}",
        "The DaemonSet does not place a pod on these nodes (a taint it does not tolerate, a "
        "nodeSelector or affinity that excludes them), so they never get pod networking.",
        lines,
        Fix(
            "add a toleration for the node's taints (or fix the nodeSelector) in the "
            "flannel DaemonSet"
        ),
    )


@rule("flannel-crashloop", "critical", explains=("subnet-env-missing",))
def flannel_crashloop(ev: Evidence) -> Iterator[Found]:
    for pod in ev.flannel_pods():
        if any("OOMKilled" in (c.last_reason, c.reason) for c in pod.containers):
            continue  # flannel-oomkilled says why
        main = [c for c in pod.containers if not c.init]
        crashing = [
            c
            for c in main
            if c.reason == "CrashLoopBackOff" or (not c.ready and c.restart_count > 0)
        ]
        if crashing:
            c = crashing[0]
            state = (
                f"{c.name}: {c.reason or c.state}, restarts {c.restart_count}, "
                f"last exit {c.last_exit_code}"
            )
            restarts = c.restart_count
        elif not main and not pod.ready and pod.restarts:
            # a recording without container details: the pod's own counters still tell
            state, restarts = f"{pod.phase}, not Ready, restarts {pod.restarts}", pod.restarts
        else:
            continue
        source, text = ev.log(pod)
        excerpt = matching_lines(text, r"^[EF]\d{4}", 2) or text.strip().splitlines()[-2:]
        yield Found(
            (pod.node,),
            f"{pod.name} on {pod.node} is crash-looping ({restarts} restarts)",
            "flanneld exits on start-up; its log says why. Until it runs, the node has no "
            "lease, no subnet.env and no routes to peers.",
            [
                EvidenceLine(f"API: pod {pod.namespace}/{pod.name}", state),
                *[EvidenceLine(source, line) for line in excerpt],
            ],
            crash_fix(ev, pod.node),
        )
    reported = {p.node for p in ev.flannel_pods()}
    yield from inferred(
        ev,
        "flannel-crashloop",
        lambda node: f"flannel keeps exiting on {node or 'a node'}",
        "The embedded flannel exits and takes k3s with it; systemd restarts the service and "
        "flannel fails the same way. The line after `flannel exited:` says why.",
        lambda node: crash_fix(ev, node),
        besides=reported,
    )


def crash_fix(ev: Evidence, node: str) -> Fix:
    """A restart only where nothing in the evidence names a cause a restart cannot cure."""
    causes = sorted(
        {
            s.finding
            for s in ev.sightings()
            if s.node == node
            and s.message.establishes
            and not s.message.restart_helps
            and s.finding not in SYMPTOMS
        }
    )
    if causes:
        return Fix(
            f"a restart will not help: the log names {', '.join(causes)}; fix that first "
            "(its finding says how), and flannel starts on its own"
        )
    if ev.flannel_embedded():
        return Fix(
            "read the line after `flannel exited:` in `journalctl -u k3s` (or k3s-agent); "
            "systemd already restarts k3s, so a restart alone changes nothing"
        )
    return Fix.restart(
        ev.flannel_namespace(), [node], "fix what the log names, then restart the pod"
    )


SYMPTOMS = frozenset({"flannel-crashloop", "subnet-env-missing"})


@rule("subnet-env-missing", "critical")
def subnet_env_missing(ev: Evidence) -> Iterator[Found]:
    lines: dict[str, list[EvidenceLine]] = {}
    for n in ev.probed():
        out = ev.probe(n, "subnet-env")
        if out is not None and not out.ok:
            lines[n] = [EvidenceLine.probe(n, "subnet-env", out.stderr or "missing")]
    confirmed = set(lines)
    for node, seen in sighted_by_node(ev, "subnet-env-missing").items():
        if node and node not in ev.probed():
            lines.setdefault(node, []).extend(quote(s) for s in seen)
        elif node in lines:
            lines[node].extend(quote(s) for s in seen)
    for node in sorted(n for n in lines if n):
        yield Found(
            (node,),
            f"/run/flannel/subnet.env missing on {node}",
            "flanneld writes subnet.env once it holds a lease; the flannel CNI plugin reads it "
            "for every new pod, so without it pods stay in ContainerCreating. It is missing "
            "when flanneld is not running (or crashed) on the node.",
            lines[node][:3],
            Fix.restart(
                ev.flannel_namespace(),
                [node],
                "restart flannel on the node; if it keeps failing, fix what its log says first",
            ),
            certainty="confirmed" if node in confirmed else "inferred",
        )


@rule("ipam-exhausted", "critical")
def ipam_exhausted(ev: Evidence) -> Iterator[Found]:
    used: dict[str, set[str]] = {}
    for pod in ev.pods:
        if pod.node and pod.pod_ip and not pod.host_network:
            used.setdefault(pod.node, set()).add(pod.pod_ip)
    seen = sighted_by_node(ev, "ipam-exhausted")
    counted: set[str] = set()
    for node in ev.probed():
        info = ev.node(node)
        out = ev.probe(node, "ipam")
        if info is None or not info.pod_cidr or out is None or not out.ok:
            continue
        counted.add(node)
        reserved = [reserved_address(path) for path in ev.fact(node, IPAM) or {}]
        net = ipaddress.ip_network(info.pod_cidr, strict=False)
        capacity = net.num_addresses - 3
        leaked = [ip for ip in reserved if ip not in used.get(node, set())]
        if len(reserved) >= capacity or seen.get(node):
            lines = [
                EvidenceLine.probe(
                    node,
                    "ipam",
                    f"{len(reserved)} of {capacity} addresses reserved, "
                    f"{len(leaked)} by containers that no longer exist",
                )
            ]
            lines += [quote(s) for s in seen.get(node, [])[:2]]
            yield Found(
                (node,),
                f"host-local IPAM on {node} is out of addresses ({len(leaked)} leaked)",
                IPAM_MECHANISM,
                lines,
                ipam_fix(node),
            )
    yield from inferred(
        ev,
        "ipam-exhausted",
        lambda node: f"host-local IPAM on {node or 'a node'} is out of addresses",
        IPAM_MECHANISM,
        ipam_fix,
        besides=counted,
    )


IPAM_MECHANISM = (
    "host-local keeps one file per address under /var/lib/cni/networks; when the runtime does "
    "not call CNI DEL (crashes, forced deletes) the files stay and the range fills up: new "
    "pods fail with `no IP addresses available`."
)


def ipam_fix(node: str) -> Fix:
    return Fix.on_node(
        "remove the reservation files whose container no longer exists, then delete the pods "
        "stuck in ContainerCreating",
        "node.release-leaked-ips",
        node,
    )


@rule("healthz-port-conflict", "critical", explains=("flannel-crashloop",))
def healthz_port_conflict(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "healthz-port-conflict",
        lambda node: f"flanneld's health port is taken on {node or 'a node'}",
        "flanneld serves /healthz on the host network (--healthz-port, 8081 in recent "
        "manifests); another process on that port makes it panic at start-up.",
        lambda node: Fix(
            "free the port on the node or give flanneld another --healthz-port in the DaemonSet"
        ),
    )
