"""Gathering the evidence diagnose needs: the API once, then the probe set on every node.

Every read has a deadline and a failure is recorded, not raised: a node that does not answer is
itself evidence (`node-unreachable`), a 403 on events becomes a gap, and the rest still reports.
Every flannel and kube-proxy pod's recent log is read, bounded to its last lines, whether the pod
looks healthy or not; a previous container's log only where one restarted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from flannel_bot.diagnosis.evidence import (
    FLANNEL_CONFIGMAPS,
    FLANNEL_NAMESPACES,
    Evidence,
    ScannedLog,
)
from flannel_bot.diagnosis.peer_tables import (
    TABLE_ARGVS,
    TABLES,
    PeerTableReducer,
    table_from_facts,
    wanted_digest,
)
from flannel_bot.errors import BotError, ExecutorError
from flannel_bot.ports.cluster import ClusterReader, NodeInfo, PodInfo, Recording
from flannel_bot.ports.nodes import DigestResult, NodeExecutor, ReducedResult
from flannel_bot.ports.probes import BY_ID, PROBES, ProbeOutput

LOG_TAIL = 300
CONFIGMAPS = (*FLANNEL_CONFIGMAPS, ("kube-system", "kube-proxy"))


def _note(ev: Evidence, what: str, exc: Exception) -> None:
    ev.gaps.append(f"could not read {what}: {exc}")


def collect_api(
    kube: ClusterReader,
    only: Sequence[str] = (),
    known: Sequence[NodeInfo] | None = None,
    log_lines: int = LOG_TAIL,
    logs_ahead: LogsAhead | None = None,
) -> Evidence:
    """The API's part of the evidence; `known`: the nodes, when the caller has just listed them;
    `logs_ahead`: the logs as another process read them, where it did."""
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
                ev.unread.add((ns, "pods"))
    for ns in FLANNEL_NAMESPACES:
        try:
            ev.daemonsets.extend(kube.list_daemonsets(ns))
        except ExecutorError as exc:
            _note(ev, f"daemonsets in {ns}", exc)
            ev.unread.add((ns, "daemonsets"))
    _read_configmaps(kube, ev)
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
    _read_logs(kube, ev, log_lines, logs_ahead)
    return ev


def _read_configmaps(kube: ClusterReader, ev: Evidence) -> None:
    for ns, name in CONFIGMAPS:
        # absent is normal for one of the two flannel namespaces
        with contextlib.suppress(ExecutorError):
            ev.configmaps[(ns, name)] = kube.get_configmap(ns, name)


def peer_reducer_of(kube: ClusterReader) -> tuple[PeerTableReducer | None, list[NodeInfo]]:
    """`peer_reducer` from what it reads alone, the nodes and flannel's ConfigMaps (not every
    pod and log `collect_api` reads), and the nodes."""
    ev = Evidence(nodes=kube.list_nodes())
    _read_configmaps(kube, ev)
    return peer_reducer(ev), ev.nodes


LogKey = tuple[str, str, str, bool]  # namespace, pod, container, previous


class LogsAhead(Protocol):
    """Logs read (and scanned) before `collect` asks for them, by another process."""

    def take(self, keys: Sequence[LogKey], log_lines: int) -> Mapping[LogKey, ScannedLog] | None:
        """Each of `keys` as read ahead (its text "" where there is none), when exactly these
        were read with `log_lines`, and their reading is accounted as if read here; else
        None, and the caller reads them itself."""
        ...

    def close(self) -> None:
        """Stop the reading, taken or not."""
        ...


def log_jobs(ev: Evidence) -> list[LogKey]:
    """The logs diagnose reads, in the order it reads them: every flannel and kube-proxy
    container's, healthy-looking or not (an older flanneld retries without exiting: Running,
    with the cause in its log), the cluster DNS's, and the previous container's where one
    restarted."""
    return [
        (pod.namespace, pod.name, c, previous)
        for pod in [*ev.flannel_pods(), *ev.kube_proxy_pods(), *ev.dns_pods()]
        for c, restarted in _log_containers(pod)
        for previous in ((False, True) if restarted else (False,))
    ]


def read_log(kube: ClusterReader, key: LogKey, log_lines: int) -> tuple[LogKey, str]:
    namespace, pod, container, previous = key
    try:
        return key, kube.read_pod_log(namespace, pod, container, previous, log_lines)
    except ExecutorError:
        return key, ""  # no previous container, or the log is gone: nothing to quote


def _read_logs(
    kube: ClusterReader, ev: Evidence, log_lines: int, ahead: LogsAhead | None = None
) -> None:
    """The last `log_lines` of each of `log_jobs`; eight reads at a time from a live cluster,
    or as `ahead` read them."""
    wanted = log_jobs(ev)
    taken = ahead.take(wanted, log_lines) if ahead is not None else None
    if taken is not None:
        for key in wanted:
            scanned = taken[key]
            if scanned.text:
                ev.logs[key] = scanned.text
                ev.log_scans[key] = scanned
        return

    def read(key: LogKey) -> tuple[LogKey, str]:
        return read_log(kube, key, log_lines)

    def keep(results: Iterable[tuple[LogKey, str]]) -> None:
        for key, text in results:
            if text:
                ev.logs[key] = text

    if isinstance(kube, Recording):
        # a record's logs are local files: threads only contend for the interpreter (10,000
        # logs at 5,000 nodes: 1.4 s in eight threads, 0.5 s in one)
        keep(map(read, wanted))
        return
    with ThreadPoolExecutor(8) as pool:
        keep(pool.map(read, wanted))


def _log_containers(pod: PodInfo) -> list[tuple[str, bool]]:
    """(container, whether it restarted) for each main container; a pod recorded without its
    containers is read as its component's usual container, previous log included."""
    named = [(c.name, c.restart_count > 0) for c in pod.containers if not c.init]
    # an init container that did not complete (install-cni's `cp` refused) says why in its log
    named += [
        (c.name, c.restart_count > 0)
        for c in pod.containers
        if c.init and (c.state == "waiting" or c.exit_code or c.restart_count)
    ]
    if named:
        return named
    usual = {"kube-proxy": "kube-proxy", "kube-dns": "coredns"}.get(
        pod.labels.get("k8s-app", ""), "kube-flannel"
    )
    return [(usual, True)]


def probe_nodes(
    nodes: NodeExecutor,
    names: Sequence[str],
    ev: Evidence,
    timeout: float = 30.0,
    reduce_tables: bool = True,
) -> None:
    """Run the probe set on each node, all nodes at once, within `timeout`.

    Each node's answers are turned into evidence as they come, one node at a time, and its VXLAN
    peer tables reduced (`peer_tables`) before the next is taken: an executor with `run_each`
    (a support bundle) reads the next node's files only then, so the tables of every node are
    never held at once. `reduce_tables=False` keeps them whole (the path before the reduction,
    for comparing)."""
    probe_set = [list(p.argv) for p in PROBES]  # the same for every node: one list, shared
    commands = {n: probe_set for n in names}
    run_each = getattr(nodes, "run_each", None)
    run_many = getattr(nodes, "run_many", None)
    reducer = peer_reducer(ev) if reduce_tables else None
    results: Iterable[tuple[str, object]]
    if callable(run_each) and reducer is not None and callable(getattr(nodes, "peer_facts", None)):
        # a support bundle may hold each node's tables reduced where it was written
        results = run_each(commands, timeout, facts=wanted_digest(reducer.wanted))
    elif callable(run_each) and reducer is not None and getattr(nodes, "digests_tables", False):
        # the node side digests its tables: only a node whose digest differs sends them
        results = run_each(commands, timeout, digest=TABLE_ARGVS)
    elif callable(run_each):
        results = run_each(commands, timeout)
    elif callable(run_many):
        results = _draining(run_many(commands, timeout))
    else:
        with ThreadPoolExecutor(8) as pool:
            results = zip(
                names, pool.map(lambda n: _sequential(nodes, n, timeout), names), strict=True
            )
    again: dict[str, list[str]] = {}  # node -> tables whose digest did not hold
    for node, outcome in results:
        if isinstance(outcome, Exception):
            ev.unreachable[node] = str(outcome)
            continue
        assert isinstance(outcome, Sequence)
        outputs = {
            probe.id: ProbeOutput(r.exit_code, r.stdout, r.stderr)
            for probe, r in zip(PROBES, outcome, strict=False)
        }
        recorded = {
            probe.id: r
            for probe, r in zip(PROBES, outcome, strict=False)
            if isinstance(r, ReducedResult | DigestResult)
        }
        del outcome
        if reducer is not None:
            reduced = {}
            for probe_id in TABLES:
                out = outputs.get(probe_id)
                table = None
                digest = recorded.get(probe_id)
                if isinstance(digest, DigestResult):
                    table = reducer.from_digest(probe_id, node, digest)
                    if table is None:  # not what the peers' annotations say: fetch it whole
                        again.setdefault(node, []).append(probe_id)
                        del outputs[probe_id]
                        continue
                elif probe_id in recorded:
                    facts = recorded[probe_id]
                    assert isinstance(facts, ReducedResult)
                    table = table_from_facts(probe_id, facts, reducer.wanted)
                    if table is None:  # not this cluster's keys: the table itself, then
                        out = _reread(nodes, node, probe_id, timeout)
                        outputs[probe_id] = out
                if table is None and out is not None:
                    table = reducer.reduce(probe_id, out, node)
                if table is not None:
                    outputs[probe_id] = table.out
                    reduced[probe_id] = table
            if reduced:
                ev.peer_tables[node] = reduced
        ev.probes[node] = outputs
    if again and reducer is not None and callable(run_each):
        _fetch_whole(run_each, again, ev, reducer, timeout)
    # in the order asked (a fan-out gives them in the order nodes answered)
    ev.probes = {n: ev.probes[n] for n in [*names, *ev.probes] if n in ev.probes}


def _fetch_whole(
    run_each: Callable[..., Iterable[tuple[str, object]]],
    again: Mapping[str, Sequence[str]],
    ev: Evidence,
    reducer: PeerTableReducer,
    timeout: float,
) -> None:
    """The tables whose digest differed, fetched whole from their nodes (one more round, for
    those nodes only) and reduced entry by entry."""
    commands = {node: [list(BY_ID[i].argv) for i in ids] for node, ids in again.items()}
    for node, outcome in run_each(commands, timeout):
        ids = again[node]
        if isinstance(outcome, Exception) or not isinstance(outcome, Sequence):
            ev.gaps.append(
                f"{node}'s {', '.join(ids)} table(s) are not what its peers' annotations say, "
                f"and could not be read whole ({outcome}): its VXLAN entries were not checked"
            )
            continue
        for probe_id, r in zip(ids, outcome, strict=False):
            out = ProbeOutput(r.exit_code, r.stdout, r.stderr)
            table = reducer.reduce(probe_id, out, node)
            if table is not None:
                out = table.out
                ev.peer_tables.setdefault(node, {})[probe_id] = table
            ev.probes[node][probe_id] = out


def _reread(nodes: NodeExecutor, node: str, probe_id: str, timeout: float) -> ProbeOutput:
    """A probe's output read again as it is (a recorded reduction that did not hold)."""
    try:
        r = nodes.run(node, BY_ID[probe_id].argv, timeout)
    except BotError as exc:
        return ProbeOutput(127, "", str(exc))
    return ProbeOutput(r.exit_code, r.stdout, r.stderr)


def peer_reducer(ev: Evidence) -> PeerTableReducer | None:
    """A reducer of the peer tables for a VXLAN cluster on flannel.1 (the only tables that
    grow with the square of the nodes); None for other backends, whose rules read the tables
    whole."""
    backend = ev.backend()
    if backend.type != "vxlan" or backend.device != "flannel.1":
        return None
    return PeerTableReducer(ev.peers_wanted())


def _draining(results: Mapping[str, object]) -> Iterator[tuple[str, object]]:
    """A fan-out's results node by node, each dropped once taken."""
    pending = results if isinstance(results, dict) else dict(results)
    del results
    while pending:
        node = next(iter(pending))
        yield node, pending.pop(node)


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
    log_lines: int = LOG_TAIL,
    reduce_tables: bool = True,
    logs_ahead: LogsAhead | None = None,
) -> Evidence:
    """The evidence for diagnose. A reader that is a `Recording` (a support bundle) says what
    only it knows, e.g. which probes it simply does not contain; `_from_recording` applies it.
    `known`: the cluster's nodes, when the caller has just listed them (no second list call)."""
    ev = collect_api(kube, only, known, log_lines, logs_ahead)
    names = list(only) or [n.name for n in ev.nodes]
    if nodes is None:
        ev.gaps.append("no node access: findings that need node probes were not checked")
    else:
        probe_nodes(nodes, names, ev, timeout, reduce_tables)
        if deep:
            deep_check(nodes, ev, names)
    if isinstance(kube, Recording):
        _from_recording(ev, kube, deep)
    _flannel_unchecked(ev)
    return ev


def _flannel_unchecked(ev: Evidence) -> None:
    """No flannel in lists that were not all read is not "flannel is not deployed": say so."""
    unread = ev.flannel_unread()
    if unread and not (ev.flannel_pods() or ev.flannel_daemonsets()):
        ev.gaps.append(
            f"whether flannel is deployed was not checked: {', '.join(unread)} could not be "
            f"read whole (see above), and what was read holds no flannel DaemonSet or pod"
        )


def _from_recording(ev: Evidence, recording: Recording, deep: bool) -> None:
    """What `collect` cannot know about a recording: missing probes are unknown, not failed;
    the recording's own notes on missing files replace collect's; deep checks need live nodes."""
    for node, probe_id in recording.missing_probes:
        ev.probes.get(node, {}).pop(probe_id, None)
    ev.probes = {node: outputs for node, outputs in ev.probes.items() if outputs}
    ev.unread |= recording.unread
    ev.deep = {}
    gaps = recording.gaps
    ev.gaps = [g for g in ev.gaps if not any(gap in g for gap in gaps)] + gaps
    if deep:
        ev.gaps.append(
            "the deep check (pinging each peer across the overlay) needs live nodes; a "
            "support bundle cannot answer it"
        )
    ev.source = recording.description
