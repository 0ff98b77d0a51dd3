"""Small in-memory fakes of our own executor interfaces, and a clock that does not sleep."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from flannel_bot.errors import NotFound
from flannel_bot.executors.snapshot import NothingElseRecorded
from flannel_bot.ports.cluster import ConfigMapInfo, NodeInfo, PodInfo
from flannel_bot.ports.nodes import CommandResult


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
        self.lock = threading.Lock()

    def now(self) -> datetime:
        with self.lock:
            return self.moment

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.moment += timedelta(seconds=seconds)


def flannel_pod(node: str, name: str | None = None, ready: bool = True) -> PodInfo:
    return PodInfo(
        namespace="kube-flannel",
        name=name or f"kube-flannel-ds-{node}aaa",
        node=node,
        ready=ready,
        labels={"app": "flannel"},
        owner_kind="DaemonSet",
        owner_name="kube-flannel-ds",
    )


class FakeCluster(NothingElseRecorded):
    """KubeExecutor + NodeExecutor. Deleted DaemonSet pods come back Ready after
    `restart_seconds` of fake time (None: never). Every write is recorded in `calls`."""

    def __init__(self, clock: FakeClock, nodes: Sequence[str] = ("w1", "w2", "w3")) -> None:
        self.clock = clock
        self.nodes = [NodeInfo(name=n, pod_cidr=f"10.244.{i}.0/24") for i, n in enumerate(nodes)]
        self.pods = [flannel_pod(n) for n in nodes]
        self.restart_seconds: float | None = 5
        self.calls: list[tuple[str, ...]] = []
        self.command_results: dict[tuple[str, ...], CommandResult] = {}
        self.configmaps: dict[str, dict[str, str]] = {}
        self._born: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._n = 0

    def list_nodes(self) -> list[NodeInfo]:
        return list(self.nodes)

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]:
        now = self.clock.now()
        out = []
        with self._lock:
            for pod in self.pods:
                born = self._born.get(pod.name)
                if (
                    born is not None
                    and self.restart_seconds is not None
                    and (now - born).total_seconds() >= self.restart_seconds
                ):
                    pod = replace(pod, ready=True, phase="Running")
                if namespace not in (None, pod.namespace) or node not in (None, pod.node):
                    continue
                if label_selector:
                    key, _, value = label_selector.partition("=")
                    if pod.labels.get(key) != value:
                        continue
                out.append(pod)
        return out

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            self.calls.append(("delete_pod", namespace, name))
            pod = next((p for p in self.pods if p.name == name and p.namespace == namespace), None)
            if pod is None:
                raise NotFound(f"DELETE pod {namespace}/{name}: not found")
            self.pods.remove(pod)
            self._n += 1
            new = replace(pod, name=f"{pod.owner_name}-new{self._n}", ready=False, phase="Pending")
            self.pods.append(new)
            self._born[new.name] = self.clock.now()

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        with self._lock:
            self.calls.append(("patch_configmap", namespace, name))
            self.configmaps.setdefault(f"{namespace}/{name}", {}).update(data)

    def get_configmap(self, namespace: str, name: str) -> ConfigMapInfo:
        key = f"{namespace}/{name}"
        if key not in self.configmaps:
            raise NotFound(f"GET configmap {key}: not found")
        return ConfigMapInfo(namespace, name, dict(self.configmaps[key]))

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        with self._lock:
            self.calls.append(("run", node, *argv))
        return self.command_results.get(
            (node, *argv), CommandResult(node, tuple(argv), 0, f"ran {' '.join(argv)}")
        )
