"""Builds the real object graph from settings: the one place that knows every concrete class."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn, cast

from flannel_bot.diagnosis.collector import few_collections
from flannel_bot.errors import ExecutorError, KubeConfigError
from flannel_bot.executors.node_settings import DEFAULT_IMAGE, SELF_IMAGE
from flannel_bot.executors.snapshot import SnapshotCluster
from flannel_bot.ports.clock import Clock, SystemClock
from flannel_bot.ports.cluster import KubeExecutor
from flannel_bot.ports.nodes import FanOutExecutor
from flannel_bot.process.owner import owner_alive, this_process
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.registry import Registry
from flannel_bot.service.clusters import Cluster, Clusters
from flannel_bot.service.handler import Service
from flannel_bot.settings import DEFAULT_CLUSTER, ClusterSettings, ConfigError, Settings
from flannel_bot.store import SqliteStore

if TYPE_CHECKING:  # the clients are imported by the commands that use them: start-up time
    from flannel_bot.diagnosis.evidence import Evidence
    from flannel_bot.executors.bundle import Limits
    from flannel_bot.executors.kube import KubeClient
    from flannel_bot.executors.kube.nodepods import PodNodeExecutor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class App:
    settings: Settings
    store: SqliteStore
    clusters: Clusters
    service: Service

    @property
    def engine(self) -> Engine:
        """The default cluster's engine."""
        return self.clusters.get().engine


def build_executors(cluster: ClusterSettings, clock: Clock) -> tuple[KubeExecutor, FanOutExecutor]:
    """A recording if the cluster is one, else the live API (kubeconfig or in-cluster) and, by
    `[nodes] access`, SSH to each node's InternalIP or node-exec pods through the same API
    client (whose leftovers from a killed bot are deleted here, before any new one is made)."""
    if cluster.recording is not None:
        if cluster.recording.is_dir():
            from flannel_bot.executors.bundle import BundleReader
            from flannel_bot.process.bundle_split import SplitProbes

            bundle = BundleReader(cluster.recording)
            return bundle, cast(FanOutExecutor, SplitProbes.of(bundle))
        snapshot = SnapshotCluster.load(cluster.recording, clock)
        return snapshot, snapshot
    kubeconfig = cluster.kubeconfig
    if kubeconfig is None and not cluster.in_cluster:
        default = Path.home() / ".kube" / "config"
        if not default.exists():
            raise ConfigError(
                "no cluster configured: pass --kubeconfig FILE (or set KUBECONFIG), run inside "
                "the cluster with FLANNEL_BOT_IN_CLUSTER=1, or use a recorded cluster with "
                "--recording examples/cluster.json"
            )
        kubeconfig = default
    from flannel_bot.executors.kube import KubeClient, KubeSettings
    from flannel_bot.executors.ssh import SshExecutor

    kube = KubeClient.from_settings(
        KubeSettings(
            kubeconfig=None if cluster.in_cluster else kubeconfig,
            context=cluster.context,
            in_cluster=cluster.in_cluster,
            server=cluster.api_server,
        )
    )

    if cluster.nodes.access == "pod":
        return kube, node_pods(kube, cluster)

    def node_address(node: str) -> str:
        address = kube.get_node(node).internal_ip
        if not address:
            raise ExecutorError(
                f"node {node} has no InternalIP address in the API; map it in [ssh] hosts"
            )
        return address

    on_error = functools.partial(count_ssh_error, cluster=cluster.name)
    return kube, SshExecutor(cluster.ssh, resolve=node_address, on_error=on_error)


def node_pods(
    kube: KubeClient, cluster: ClusterSettings, env: Mapping[str, str] = os.environ
) -> PodNodeExecutor:
    """The pod transport for a cluster, its leftover pods deleted first. A cleanup the API
    refuses is logged, not fatal: each run's pods are deleted in any case, and diagnose shows
    the refusal on the nodes if creating pods is refused too."""
    from flannel_bot.executors.kube.nodepods import PodNodeExecutor

    settings = cluster.nodes
    if settings.image == SELF_IMAGE:
        settings = dataclasses.replace(settings, image=own_image(kube, settings.namespace, env))
    pods = PodNodeExecutor(
        kube, settings, cluster.name, command_timeout=cluster.ssh.command_timeout
    )
    try:
        pods.cleanup_leftovers()
    except ExecutorError as exc:
        log.warning("cluster %s: could not delete leftover node-exec pods: %s", cluster.name, exc)
    return pods


def own_image(kube: KubeClient, namespace: str, env: Mapping[str, str]) -> str:
    """The image of the bot's own pod (`POD_NAME`, else the host name a pod is given), for
    `[nodes] image = "self"`; the release's image where it cannot be read, with why."""
    name = env.get("POD_NAME") or env.get("HOSTNAME", "")
    try:
        pod = kube.read_pod_raw(namespace, name) if name else {}
    except ExecutorError as exc:
        log.warning("[nodes] image: could not read this pod %s/%s: %s", namespace, name, exc)
        pod = {}
    containers = (pod.get("spec") or {}).get("containers") or []
    images = [c.get("image") for c in containers if c.get("name") == "flannel-bot"]
    image = images[0] if images else (containers[0].get("image") if containers else None)
    if isinstance(image, str) and image:
        return image
    log.warning(
        "[nodes] image: this bot's own image is unknown (no pod %s/%r); node-exec pods use %s",
        namespace,
        name,
        DEFAULT_IMAGE,
    )
    return DEFAULT_IMAGE


def count_ssh_error(kind: str, cluster: str = DEFAULT_CLUSTER) -> None:
    """`/metrics`: SSH failures by cluster and kind, as the SSH executor reports them."""
    # imported here: the shell's commands never load prometheus_client (or its http.server)
    from flannel_bot.process.metrics import METRICS

    METRICS.ssh_errors.labels(cluster=cluster, kind=kind).inc()


def evidence_from_bundle(
    path: Path | str,
    only: Sequence[str] = (),
    deep: bool = False,
    limits: Limits | None = None,
    split_from: int | None = None,
    logs_from: int | None = None,
) -> Evidence:
    """`collect` over a support bundle, with what the bundle lacked, and what it held that was
    refused or cut (`limits`, default `Limits()`), appended to `gaps`. From `split_from` probed
    nodes (default `bundle_split.SPLIT_FROM`) the probes are read by two processes; else from
    `logs_from` nodes (default `logs_ahead.LOGS_FROM`) the pods' logs are read by a second
    process while the pods are read here."""
    from flannel_bot.diagnosis.collect import LOG_TAIL, collect
    from flannel_bot.executors.bundle import BundleReader
    from flannel_bot.process.bundle_split import SPLIT_FROM, SplitProbes
    from flannel_bot.process.logs_ahead import LogsAhead

    reader = BundleReader(path, limits, cache_probes=False)  # read once, node by node
    nodes = SplitProbes.of(reader, SPLIT_FROM if split_from is None else split_from)
    logs = None
    try:
        with few_collections():  # the evidence of 150,000 pods: no cycles, millions of objects
            if isinstance(nodes, SplitProbes):
                nodes.start(only)  # the probes read while the API objects are
            else:  # the probe workers have the other cores; else the logs read meanwhile
                logs = LogsAhead.start(reader, LOG_TAIL, logs_from)
            return collect(reader, nodes, only, deep=deep, logs_ahead=logs)
    finally:
        if isinstance(nodes, SplitProbes):
            nodes.close()
        if logs is not None:
            logs.close()


def write_peer_facts(path: Path | str, limits: Limits | None = None) -> int:
    """Reduce each probed node's VXLAN peer tables in a support bundle and write the result
    beside them (`probes/<node>/peer-tables.json`), so that reading the bundle need not parse
    tables that grow with the square of the cluster; returns how many nodes got one. Nothing is
    written for another backend, or for a node whose tables are missing or not `ip -j` JSON.

    `limits` default to the reader's per-file limits without its whole-bundle byte and time
    budgets: the tables are read once, one node at a time, and every node should get its
    reduction (a 5,000-node bundle is over the 4 GiB a diagnose reads)."""
    from flannel_bot.diagnosis.collect import peer_reducer_of
    from flannel_bot.diagnosis.peer_tables import TABLE_ARGVS, facts_document, wanted_digest
    from flannel_bot.executors.bundle import BundleReader
    from flannel_bot.executors.bundle import Limits as Read
    from flannel_bot.executors.bundle import write_peer_facts as write_one
    from flannel_bot.ports.probes import ProbeOutput

    if limits is None:
        limits = dataclasses.replace(Read(), total_bytes=1 << 50, seconds=24 * 3600.0)
    reader = BundleReader(path, limits, cache_probes=False)
    reducer, nodes = peer_reducer_of(reader)
    if reducer is None:
        return 0
    digest = wanted_digest(reducer.wanted)
    argvs = [list(argv) for argv in TABLE_ARGVS]
    written = 0
    for node, outcome in reader.run_each({n.name: argvs for n in nodes}):
        if isinstance(outcome, Exception):
            continue
        tables = {}
        for probe_id, result in zip(TABLE_ARGVS.values(), outcome, strict=True):
            out = ProbeOutput(result.exit_code, result.stdout, result.stderr)
            table = reducer.reduce(probe_id, out, node) if result.exit_code != 127 else None
            if table is None:
                break
            tables[probe_id] = (table, len(result.stdout.encode("utf-8")))
        else:
            write_one(path, node, facts_document(digest, tables))
            written += 1
    return written


class NoCluster:
    """Stands in for a cluster's executors in a command that reads only the runbooks and the
    audit log (help, runbooks, status, audit): none is built, so none need be configured.
    Anything that asks it something is a bug, and told so."""

    def __init__(self, problem: ConfigError) -> None:
        self.problem = problem

    def __getattr__(self, name: str) -> Callable[..., NoReturn]:
        if name.startswith("_"):
            raise AttributeError(name)

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise ConfigError(str(self.problem))

        return refuse


def build_cluster(
    settings: Settings, store: SqliteStore, name: str, clock: Clock, offline: bool = False
) -> Cluster:
    """One cluster's executors and engine; a configuration error names the cluster. `offline`:
    an engine for the runbooks, policy and audit log only, its executors `NoCluster`."""
    cs = settings.cluster(name)
    try:
        if offline:
            none = NoCluster(ConfigError(f"this command was started without cluster {name}"))
            kube, nodes = cast(KubeExecutor, none), cast(FanOutExecutor, none)
        else:
            kube, nodes = build_executors(cs, clock)
    except (ConfigError, KubeConfigError) as exc:
        many = len(settings.clusters) > 1
        raise ConfigError(f"cluster {name}: {exc}" if many else str(exc)) from None
    recorded = isinstance(nodes, SnapshotCluster | NoCluster)
    logs_ahead = None
    recording = cs.recording
    if not offline and recording is not None and recording.is_dir() and cast(object, nodes) is kube:
        # a support bundle whose probes no workers read: its logs may be, while its pods are
        from flannel_bot.executors.bundle import BundleReader
        from flannel_bot.process.logs_ahead import LogsAhead

        logs_ahead = functools.partial(LogsAhead.start, cast(BundleReader, kube))
    engine = Engine(
        store=store,
        registry=Registry.from_package(),
        policy=settings.policy,
        kube=kube,
        nodes=nodes,
        clock=clock,
        owner=this_process(),
        owner_alive=owner_alive,
        check_interval=settings.check_interval,
        probe_nodes=not recorded,
        cluster=name,
        node_access=cs.nodes.access,
    )
    return Cluster(name, engine, None if recorded else nodes, logs_ahead)


ClusterUse = Literal["at start", "when asked", "none"]


def build_app(
    settings: Settings, clock: Clock | None = None, clusters_built: ClusterUse = "at start"
) -> App:
    """The clusters are built on first use; the default one is built here ("at start"), so a
    broken default configuration fails at start-up rather than on the first command. "when
    asked": not until used (doctor reports a cluster it cannot build as one of its findings).
    "none": never, for commands that read only the runbooks and the audit log (no cluster need
    be configured, and the Kubernetes and SSH clients are not even imported)."""
    clock = clock or SystemClock()
    store = SqliteStore(settings.db_path, clock)
    offline = clusters_built == "none"
    clusters = Clusters(
        [c.name for c in settings.clusters],
        settings.default_cluster,
        lambda name: build_cluster(settings, store, name, clock, offline),
    )
    if clusters_built == "at start":
        clusters.get()
    service = Service(clusters, store, settings.max_report_events)
    return App(settings, store, clusters, service)


def open_audit_log_read_only(settings: Settings) -> SqliteStore:
    """The audit log as evidence: opened read-only, so verifying it records nothing and works
    on a copy nobody may write (no migrations, no cluster)."""
    return SqliteStore(settings.db_path, SystemClock(), read_only=True)
