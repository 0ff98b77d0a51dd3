"""Gathering the evidence diagnose needs: the API once, then the probe set on every node.

Every read has a deadline and a failure is recorded, not raised: a node that does not answer is
itself evidence (`node-unreachable`), a 403 on events becomes a gap, and the rest still reports.
Logs are read only where they can explain something (flannel and kube-proxy pods that are not
Ready or have restarted, and the pods on the nodes asked about), so a big cluster costs a few
list calls, not one call per pod.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bot.diagnosis.evidence import FLANNEL_NAMESPACES, Evidence
from bot.errors import BotError, ExecutorError
from bot.ports.cluster import ClusterReader, NodeInfo, PodInfo, Recording
from bot.ports.nodes import NodeExecutor
from bot.ports.probes import PROBES, ProbeOutput

LOG_TAIL = 300
CONFIGMAPS = (
    ("kube-flannel", "kube-flannel-cfg"),
    ("kube-system", "kube-flannel-cfg"),
    ("kube-system", "kube-proxy"),
)


def _note(ev: Evidence, what: str, exc: Exception) -> None:
    ev.gaps.append(f"could not read {what}: {exc}")


def collect_api(
    kube: ClusterReader, only: Sequence[str] = (), known: Sequence[NodeInfo] | None = None
) -> Evidence:
    """The API's part of the evidence; `known`: the nodes, when the caller has just listed them."""
    ev = Evidence()
    ev.nodes = list(known) if known is not None else kube.list_nodes()
    try:
        ev.pods = kube.list_pods(None)
    except ExecutorError as exc:
        _note(ev, "pods in all namespaces", exc)
        for ns in FLANNEL_NAMESPACES:
            try:
                ev.pods.extend(kube.list_pods(ns))
            except ExecutorError as inner:
                _note(ev, f"pods in {ns}", inner)
    for ns in FLANNEL_NAMESPACES:
        try:
            ev.daemonsets.extend(kube.list_daemonsets(ns))
        except ExecutorError as exc:
            _note(ev, f"daemonsets in {ns}", exc)
    for ns, name in CONFIGMAPS:
        # absent is normal for one of the two flannel namespaces
        with contextlib.suppress(ExecutorError):
            ev.configmaps[(ns, name)] = kube.get_configmap(ns, name)
    try:
        ev.events = kube.list_events(None)
    except ExecutorError as exc:
        _note(ev, "events", exc)
    try:
        ev.services[("default", "kubernetes")] = kube.get_service("default", "kubernetes")
    except ExecutorError as exc:
        _note(ev, "the kubernetes Service", exc)
    try:
        ev.rbac = kube.read_rbac()
    except ExecutorError as exc:
        _note(ev, "RBAC", exc)
        ev.rbac = type(ev.rbac)(readable=False)
    for pod in _pods_worth_a_log(ev, only):
        for container in _log_containers(pod):
            for previous in (False, True):
                try:
                    text = kube.read_pod_log(pod.namespace, pod.name, container, previous, LOG_TAIL)
                except ExecutorError:
                    continue  # no previous container, or the log is gone: nothing to quote
                if text:
                    ev.logs[(pod.namespace, pod.name, container, previous)] = text
    return ev


def _pods_worth_a_log(ev: Evidence, only: Sequence[str]) -> list[PodInfo]:
    wanted = []
    system = [
        p
        for p in ev.pods
        if p.namespace in FLANNEL_NAMESPACES
        and (
            p.labels.get("app") == "flannel" or p.labels.get("k8s-app") in ("flannel", "kube-proxy")
        )
    ]
    for pod in system:
        troubled = any(not c.ready or c.restart_count for c in pod.containers if not c.init)
        if troubled or pod.node in only or not pod.containers:
            wanted.append(pod)
    return wanted


def _log_containers(pod: PodInfo) -> list[str]:
    names = [c.name for c in pod.containers if not c.init]
    return names or (["kube-flannel"] if pod.labels.get("app") == "flannel" else ["kube-proxy"])


def probe_nodes(
    nodes: NodeExecutor, names: Sequence[str], ev: Evidence, timeout: float = 30.0
) -> None:
    """Run the probe set on each node, all nodes at once, within `timeout`."""
    commands = {n: [list(p.argv) for p in PROBES] for n in names}
    run_many = getattr(nodes, "run_many", None)
    if callable(run_many):
        results = run_many(commands, timeout)
    else:
        with ThreadPoolExecutor(8) as pool:
            results = dict(
                zip(names, pool.map(lambda n: _sequential(nodes, n, timeout), names), strict=True)
            )
    for node, outcome in results.items():
        if isinstance(outcome, Exception):
            ev.unreachable[node] = str(outcome)
            continue
        ev.probes[node] = {
            probe.id: ProbeOutput(r.exit_code, r.stdout, r.stderr)
            for probe, r in zip(PROBES, outcome, strict=False)
        }


def _sequential(nodes: NodeExecutor, node: str, timeout: float) -> object:
    out = []
    try:
        for probe in PROBES:
            out.append(nodes.run(node, probe.argv, timeout / len(PROBES)))
    except BotError as exc:
        return exc
    return out


def deep_check(nodes: NodeExecutor, ev: Evidence, names: Sequence[str]) -> None:
    """From each node, ping every peer's cni0 gateway across the overlay (one packet each)."""
    gateways = {}
    for node in ev.nodes:
        cidr = node.pod_cidr
        if cidr:
            base = cidr.split("/")[0].rsplit(".", 1)[0]
            gateways[node.name] = f"{base}.1"

    def check(name: str) -> tuple[str, dict[str, bool]]:
        row = {}
        for peer, gateway in gateways.items():
            if peer == name:
                continue
            try:
                res = nodes.run(name, ["ping", "-c", "1", "-W", "1", gateway], 5)
                row[peer] = res.exit_code == 0
            except BotError:
                row[peer] = False
        return name, row

    with ThreadPoolExecutor(8) as pool:
        for name, row in pool.map(check, [n for n in names if n not in ev.unreachable]):
            ev.deep[name] = row


def collect(
    kube: ClusterReader,
    nodes: NodeExecutor | None,
    only: Sequence[str] = (),
    deep: bool = False,
    timeout: float = 30.0,
    known: Sequence[NodeInfo] | None = None,
) -> Evidence:
    """The evidence for diagnose. A reader that is a `Recording` (a support bundle) says what
    only it knows, e.g. which probes it simply does not contain; `_from_recording` applies it.
    `known`: the cluster's nodes, when the caller has just listed them (no second list call)."""
    ev = collect_api(kube, only, known)
    names = list(only) or [n.name for n in ev.nodes]
    if nodes is None:
        ev.gaps.append("no node access: findings that need node probes were not checked")
    else:
        probe_nodes(nodes, names, ev, timeout)
        if deep:
            deep_check(nodes, ev, names)
    if isinstance(kube, Recording):
        _from_recording(ev, kube, deep)
    return ev


def _from_recording(ev: Evidence, recording: Recording, deep: bool) -> None:
    """What `collect` cannot know about a recording: missing probes are unknown, not failed;
    the recording's own notes on missing files replace collect's; deep checks need live nodes."""
    for node, probe_id in recording.missing_probes:
        ev.probes.get(node, {}).pop(probe_id, None)
    ev.probes = {node: outputs for node, outputs in ev.probes.items() if outputs}
    ev.deep = {}
    gaps = recording.gaps
    ev.gaps = [g for g in ev.gaps if not any(gap in g for gap in gaps)] + gaps
    if deep:
        ev.gaps.append(
            "the deep check (pinging each peer across the overlay) needs live nodes; a "
            "support bundle cannot answer it"
        )
    ev.source = recording.description
