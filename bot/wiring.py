"""Builds the real object graph from settings: the one place that knows every concrete class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.core.clock import Clock, SystemClock
from bot.core.engine import Engine
from bot.core.executors import KubeExecutor, NodeExecutor
from bot.core.registry import Registry
from bot.core.service import Service
from bot.errors import ExecutorError
from bot.executors.bundle import BundleReader
from bot.executors.kube import KubeClient, KubeSettings
from bot.executors.snapshot import SnapshotCluster
from bot.executors.ssh import SshExecutor
from bot.owner import owner_alive, this_process
from bot.render import Renderer
from bot.settings import ConfigError, Settings
from bot.store import Store


@dataclass(frozen=True)
class App:
    settings: Settings
    store: Store
    engine: Engine
    service: Service
    renderer: Renderer


def build_executors(settings: Settings, clock: Clock) -> tuple[KubeExecutor, NodeExecutor]:
    """A recorded cluster if one is configured, else the live API (kubeconfig or in-cluster)
    and SSH to each node's InternalIP."""
    if settings.cluster_file is not None:
        if settings.cluster_file.is_dir():
            bundle = BundleReader(settings.cluster_file)
            return bundle, bundle
        snapshot = SnapshotCluster.load(settings.cluster_file, clock)
        return snapshot, snapshot
    kubeconfig = settings.kubeconfig
    if kubeconfig is None and not settings.in_cluster:
        default = Path.home() / ".kube" / "config"
        if not default.exists():
            raise ConfigError(
                "no cluster configured: pass --kubeconfig FILE (or set KUBECONFIG), run inside "
                "the cluster with FLANNEL_BOT_IN_CLUSTER=1, or use a recorded cluster with "
                "--cluster examples/cluster.json"
            )
        kubeconfig = default
    kube = KubeClient.from_settings(
        KubeSettings(
            kubeconfig=None if settings.in_cluster else kubeconfig,
            context=settings.context,
            in_cluster=settings.in_cluster,
        ),
        clock,
    )

    def node_address(node: str) -> str:
        address = kube.get_node(node).internal_ip
        if not address:
            raise ExecutorError(
                f"node {node} has no InternalIP address in the API; map it in [ssh] hosts"
            )
        return address

    return kube, SshExecutor(settings.ssh, resolve=node_address)


def build_app(settings: Settings, clock: Clock | None = None) -> App:
    clock = clock or SystemClock()
    kube, nodes = build_executors(settings, clock)
    store = Store(settings.db_path, clock)
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
        probe_nodes=not isinstance(nodes, SnapshotCluster),
    )
    prober = None if isinstance(nodes, SnapshotCluster) else nodes
    service = Service(engine, store, kube, prober)
    return App(settings, store, engine, service, Renderer(settings.templates_dir))
