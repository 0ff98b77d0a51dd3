"""A recorded cluster, replayed: the bundled example cluster and saved incident bundles.

It answers the same calls as the live executors from a JSON file, and plays the one controller the
runbooks rely on: a deleted DaemonSet pod is replaced by a new pod that turns Ready after
`daemonset_restart_seconds`. Node commands return their recorded output; anything not recorded
fails with exit 127 instead of guessing.
"""

from __future__ import annotations

import itertools
import json
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flannel_bot.errors import BotError, ExecutorError, NotFound
from flannel_bot.executors.selectors import labels_match
from flannel_bot.ports.clock import Clock
from flannel_bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    ServiceInfo,
)
from flannel_bot.ports.nodes import CommandResult


class NothingElseRecorded:
    """The reads diagnose makes that a recording (or a test fake) has nothing for: no
    DaemonSets, events, logs, Services or RBAC. Mixed into such readers."""

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]:
        return []

    def list_events(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> list[EventInfo]:
        return []

    def read_pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> str:
        return ""

    def get_service(self, namespace: str, name: str) -> ServiceInfo:
        raise NotFound(f"GET service {namespace}/{name}: not recorded")

    def read_rbac(self) -> Rbac:
        return Rbac(readable=False)

    def object_exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        raise ExecutorError(f"{kind} {name}: not recorded, so whether it exists is unknown")

    def patch_daemonset(self, namespace: str, name: str, patch: Mapping[str, Any]) -> object:
        raise ExecutorError(f"PATCH daemonset {namespace}/{name}: no DaemonSets are recorded")

    def create_object(self, obj: Mapping[str, Any]) -> None:
        raise ExecutorError(
            f"CREATE {obj.get('kind', 'object')}: a recorded cluster cannot create objects"
        )


class SnapshotCluster(NothingElseRecorded):
    """Implements KubeExecutor and FanOutExecutor over a recorded cluster state."""

    def __init__(self, data: Mapping[str, Any], clock: Clock) -> None:
        self.name = str(data.get("name", "snapshot"))
        self.clock = clock
        self.restart_after = timedelta(seconds=float(data.get("daemonset_restart_seconds", 2)))
        self._nodes = [NodeInfo(**n) for n in data.get("nodes", [])]
        self._pods = [PodInfo(**p) for p in data.get("pods", [])]
        self._ready_at: dict[str, datetime] = {}
        self._configmaps: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in data.get("configmaps", {}).items()
        }
        self._commands: dict[str, dict[str, dict[str, Any]]] = data.get("commands", {})
        self._lock = threading.Lock()
        self._suffix = itertools.count(1)

    @classmethod
    def load(cls, path: Path, clock: Clock) -> SnapshotCluster:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ExecutorError(f"cannot read cluster snapshot {path}: {exc}") from None
        return cls(data, clock)

    def list_nodes(self) -> list[NodeInfo]:
        return list(self._nodes)

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]:
        now = self.clock.now()
        with self._lock:
            pods = []
            for pod in self._pods:
                ready_at = self._ready_at.get(pod.name)
                if ready_at is not None and now >= ready_at:
                    pod = replace(pod, phase="Running", ready=True)
                pods.append(pod)
        return [
            p
            for p in pods
            if (namespace is None or p.namespace == namespace)
            and (node is None or p.node == node)
            and labels_match(label_selector, p.labels)
        ]

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            pod = next((p for p in self._pods if p.namespace == namespace and p.name == name), None)
            if pod is None:
                raise NotFound(f"DELETE pod {namespace}/{name}: pod not found")
            self._pods.remove(pod)
            if pod.owner_kind == "DaemonSet":
                new_name = f"{pod.owner_name}-r{next(self._suffix)}{pod.name[-3:]}"
                self._pods.append(
                    replace(pod, name=new_name, phase="Pending", ready=False, restarts=0)
                )
                self._ready_at[new_name] = self.clock.now() + self.restart_after

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        key = f"{namespace}/{name}"
        with self._lock:
            if key not in self._configmaps:
                raise NotFound(f"PATCH configmap {key}: not found")
            self._configmaps[key].update(data)

    def get_configmap(self, namespace: str, name: str) -> ConfigMapInfo:
        key = f"{namespace}/{name}"
        if key not in self._configmaps:
            raise NotFound(f"GET configmap {key}: not in the snapshot")
        return ConfigMapInfo(namespace, name, dict(self._configmaps[key]))

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        if node not in {n.name for n in self._nodes}:
            raise ExecutorError(f"node {node}: not in the snapshot")
        recorded = self._commands.get(node, {}).get(shlex.join(argv))
        if recorded is None:
            return CommandResult(
                node,
                tuple(argv),
                127,
                "",
                f"{shlex.join(argv)}: not recorded in snapshot {self.name}",
            )
        return CommandResult(
            node,
            tuple(argv),
            int(recorded.get("exit_code", 0)),
            str(recorded.get("stdout", "")),
            str(recorded.get("stderr", "")),
        )

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> dict[str, list[CommandResult] | Exception]:
        """Each node's argvs in order, like the SSH fan-out: the error that stops a node (one
        not in the snapshot) is that node's outcome."""
        results: dict[str, list[CommandResult] | Exception] = {}
        for node, argvs in commands.items():
            try:
                results[node] = [self.run(node, argv, timeout or 0.0) for argv in argvs]
            except BotError as exc:
                results[node] = exc
        return results
