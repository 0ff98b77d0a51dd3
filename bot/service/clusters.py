"""The clusters one bot serves, each with its own engine and executors, built on first use.

Built lazily so that one cluster whose kubeconfig is missing or whose API is down does not stop
the bot from working on the others: the error reaches only the person who asked for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from flannel_bot.diagnosis.collect import LogsAhead
from flannel_bot.errors import UnknownCluster
from flannel_bot.ports.cluster import ClusterReader
from flannel_bot.ports.nodes import NodeExecutor
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.policy import Policy


@dataclass(frozen=True)
class Cluster:
    """`prober` runs the node probes, or is None where nodes cannot be reached (a recording).
    `logs_ahead(log_lines)`: the pods' logs set reading in another process, where the reader
    is a large support bundle (see `process.logs_ahead`)."""

    name: str
    engine: Engine
    prober: NodeExecutor | None
    logs_ahead: Callable[[int], LogsAhead | None] | None = None

    @property
    def reader(self) -> ClusterReader:
        """What diagnose reads: the engine's API client or recording, which reads it all."""
        return cast(ClusterReader, self.engine.kube)


class Clusters:
    def __init__(self, names: Sequence[str], default: str, build: Callable[[str], Cluster]) -> None:
        if default not in names:
            raise ValueError(f"default cluster {default!r} is not one of {list(names)}")
        self.names = tuple(names)
        self.default = default
        self._build = build
        self._built: dict[str, Cluster] = {}
        self._lock = threading.Lock()
        self._policy: Policy | None = None

    @classmethod
    def single(cls, cluster: Cluster) -> Clusters:
        """One cluster, already built (tests, benchmarks)."""
        clusters = cls([cluster.name], cluster.name, lambda _: cluster)
        clusters._built[cluster.name] = cluster
        return clusters

    @property
    def many(self) -> bool:
        """Whether commands must say which cluster they mean (fix commands then name it)."""
        return len(self.names) > 1

    def name(self, name: str | None = None) -> str:
        """The cluster a command means: the one it names, else the default; checked, not built."""
        wanted = name or self.default
        if wanted not in self.names:
            raise UnknownCluster(
                f"there is no cluster `{wanted}`; this bot serves: {', '.join(self.names)}"
            )
        return wanted

    def get(self, name: str | None = None) -> Cluster:
        """The named cluster (the default one when None), built the first time it is asked for;
        a cluster that fails to build is tried again on the next request."""
        wanted = self.name(name)
        with self._lock:
            cluster = self._built.get(wanted)
            if cluster is None:
                cluster = self._built[wanted] = self._build(wanted)
                if self._policy is not None:
                    cluster.engine.policy = self._policy
            return cluster

    def built(self) -> list[Cluster]:
        with self._lock:
            return list(self._built.values())

    def set_policy(self, policy: Policy) -> None:
        """One policy for every cluster (Slack user groups update it while serving)."""
        with self._lock:
            self._policy = policy
            for cluster in self._built.values():
                cluster.engine.policy = policy
