"""The Kubernetes API as the wings see it: small frozen records and the reader/writer Protocols.

The concrete executors (`bot.executors.kube`, the bundle and snapshot readers) implement these
Protocols; the wings only see them, so tests hand in small in-memory fakes and a replayed cluster
works like a live one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable


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
    conditions: tuple[NodeCondition, ...] = ()
    taints: tuple[Taint, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    kubelet_version: str = ""  # status.nodeInfo.kubeletVersion: v1.30.2, v1.29.4+k3s1, +rke2r1
    container_runtime: str = ""  # status.nodeInfo.containerRuntimeVersion: containerd://1.7.13


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
    containers: tuple[ContainerInfo, ...] = ()  # init containers first, in spec order
    pod_ip: str = ""
    host_ip: str = ""
    host_network: bool = False
    creation: str = ""  # metadata.creationTimestamp, RFC 3339 (sorts as text)
    deletion: str = ""  # metadata.deletionTimestamp: set while the pod is terminating


class KubeReader(Protocol):
    """Read access to the Kubernetes API."""

    def list_nodes(self) -> list[NodeInfo]: ...

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]: ...


class NodeCondition(NamedTuple):
    """One entry of a node's status.conditions, e.g. ("Ready", "False", "KubeletNotReady", ...)."""

    type: str
    status: str
    reason: str = ""
    message: str = ""


class Taint(NamedTuple):
    key: str
    value: str = ""
    effect: str = ""


@dataclass(frozen=True)
class ContainerInfo:
    """A container's spec and status merged: a container without a status yet has `state` ""."""

    name: str
    image: str = ""
    init: bool = False
    ready: bool = False
    restart_count: int = 0
    state: str = ""  # running, waiting or terminated
    reason: str = ""  # of the current state: CrashLoopBackOff, Completed, ...
    message: str = ""
    exit_code: int | None = None  # when terminated
    last_reason: str = ""  # of the last termination, kept across restarts
    last_exit_code: int | None = None


@dataclass(frozen=True)
class DaemonSetInfo:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    selector: Mapping[str, str] = field(default_factory=dict)  # spec.selector.matchLabels
    desired: int = 0
    current: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    generation: int = 0
    observed_generation: int = 0
    images: Mapping[str, str] = field(default_factory=dict)  # template container -> image
    container_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    container_commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def rolled_out(self) -> bool:
        """The controller saw the latest spec and every scheduled pod runs it and is available."""
        return (
            self.observed_generation >= self.generation
            and self.updated == self.desired == self.ready == self.available
        )


@dataclass(frozen=True)
class ConfigMapInfo:
    namespace: str
    name: str
    data: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""


@dataclass(frozen=True)
class EventInfo:
    namespace: str
    name: str
    involved_kind: str
    involved_name: str
    reason: str = ""
    message: str = ""
    type: str = ""  # Normal or Warning
    count: int = 1
    last_timestamp: str = ""  # RFC 3339; the newest of the event's timestamps
    source_component: str = ""
    source_host: str = ""
    involved_namespace: str = ""


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: str = ""  # a number or a named port, as text
    node_port: int | None = None


@dataclass(frozen=True)
class ServiceInfo:
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ip: str = ""
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RbacRule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class Rbac:
    """ClusterRoles and ClusterRoleBindings that name flannel's ServiceAccount."""

    roles: Mapping[str, tuple[RbacRule, ...]] = field(default_factory=dict)
    bindings: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = ()
    readable: bool = True

    def allows(self, namespace: str, account: str, verb: str, resource: str) -> bool:
        for _name, role, subjects in self.bindings:
            if (namespace, account) not in subjects:
                continue
            for rule in self.roles.get(role, ()):
                if (
                    ("*" in rule.verbs or verb in rule.verbs)
                    and ("*" in rule.resources or resource in rule.resources)
                    and ("" in rule.api_groups or "*" in rule.api_groups)
                ):
                    return True
        return False


class ClusterReader(KubeReader, Protocol):
    """Everything diagnose reads from the API (a live cluster, or a support bundle)."""

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]: ...

    def get_configmap(self, namespace: str, name: str) -> ConfigMapInfo: ...

    def list_events(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> list[EventInfo]: ...

    def read_pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> str: ...

    def get_service(self, namespace: str, name: str) -> ServiceInfo: ...

    def read_rbac(self) -> Rbac: ...

    def object_exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Whether an object of a kind flannel's manifest holds (Namespace, ServiceAccount,
        ClusterRole, ClusterRoleBinding, ConfigMap, DaemonSet) exists."""
        ...


class KubeExecutor(ClusterReader, Protocol):
    """Read and write access; writes are only ever called by the engine when applying actions."""

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None: ...

    def patch_daemonset(self, namespace: str, name: str, patch: Mapping[str, Any]) -> object: ...

    def create_object(self, obj: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Recording(Protocol):
    """A cluster answered from a record (a support bundle), not a live API. It says what it is
    and what it lacked, so the evidence tells "not in the record" from "failed on the node"."""

    @property
    def description(self) -> str:
        """What was read, for the evidence's source: e.g. `bundle /path/to/dump`."""
        ...

    @property
    def gaps(self) -> list[str]:
        """What the record lacked for the calls made so far, one sentence each."""
        ...

    @property
    def missing_probes(self) -> frozenset[tuple[str, str]]:
        """(node, probe id) pairs asked for that the record does not hold (answered exit 127)."""
        ...

    @property
    def unread(self) -> frozenset[tuple[str, str]]:
        """(namespace, list) pairs asked for that the record could not give whole (absent,
        refused, corrupt or cut): an empty answer from one of them proves nothing."""
        ...
