"""What the engine needs from the outside world, as interfaces and plain data.

The concrete executors (`bot.executors.*`) implement these protocols; runbooks and the engine
only see them, so tests hand in small in-memory fakes and a replayed cluster snapshot works
like a live one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class NodeInfo:
    name: str
    internal_ip: str = ""
    pod_cidr: str = ""
    ready: bool = True
    ready_reason: str = ""
    unschedulable: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str
    phase: str = "Running"
    ready: bool = True
    restarts: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    owner_kind: str = ""
    owner_name: str = ""
    uid: str = ""


@dataclass(frozen=True)
class CommandResult:
    node: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str = ""
    duration_s: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class KubeReader(Protocol):
    """Read access to the Kubernetes API."""

    def list_nodes(self) -> list[NodeInfo]: ...

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]: ...


class KubeExecutor(KubeReader, Protocol):
    """Read and write access; writes are only ever called by the engine when applying actions."""

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None: ...


class NodeExecutor(Protocol):
    """Runs argv on a node (over SSH in production)."""

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult: ...
