"""Builds the real object graph from settings: the one place that knows every concrete class."""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.clock import Clock, SystemClock
from bot.core.engine import Engine
from bot.core.registry import Registry
from bot.core.service import Service
from bot.executors.snapshot import SnapshotCluster
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


def build_app(settings: Settings, clock: Clock | None = None) -> App:
    clock = clock or SystemClock()
    if settings.cluster_file is None:
        raise ConfigError(
            "no cluster configured: pass --cluster FILE to use a recorded cluster "
            "(examples/cluster.json is bundled), or set `cluster` in the config file"
        )
    cluster = SnapshotCluster.load(settings.cluster_file, clock)
    store = Store(settings.db_path, clock)
    engine = Engine(
        store=store,
        registry=Registry.from_package(),
        policy=settings.policy,
        kube=cluster,
        nodes=cluster,
        clock=clock,
        owner=this_process(),
        owner_alive=owner_alive,
        check_interval=settings.check_interval,
    )
    return App(settings, store, engine, Service(engine, store), Renderer(settings.templates_dir))
