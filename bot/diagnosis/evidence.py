"""Everything diagnose looks at, gathered once, from a live cluster or a support bundle.

Rules read only this; they never call the API or a node. Missing parts (no node probes in a bundle,
a node that did not answer) are recorded in `gaps` and lower what can be concluded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    ServiceInfo,
)

FLANNEL_NAMESPACES = ("kube-flannel", "kube-system")
FLANNEL_SELECTORS = ("app=flannel", "k8s-app=flannel")


@dataclass(frozen=True)
class ProbeOutput:
    exit_code: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class Evidence:
    nodes: list[NodeInfo] = field(default_factory=list)
    pods: list[PodInfo] = field(default_factory=list)
    daemonsets: list[DaemonSetInfo] = field(default_factory=list)
    configmaps: dict[tuple[str, str], ConfigMapInfo] = field(default_factory=dict)
    events: list[EventInfo] = field(default_factory=list)
    services: dict[tuple[str, str], ServiceInfo] = field(default_factory=dict)
    logs: dict[tuple[str, str, str, bool], str] = field(default_factory=dict)
    rbac: Rbac = field(default_factory=Rbac)
    probes: dict[str, dict[str, ProbeOutput]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    deep: dict[str, dict[str, bool]] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    source: str = "live"

    # -- views the rules share ------------------------------------------------------------------

    def flannel_pods(self) -> list[PodInfo]:
        return [
            p
            for p in self.pods
            if p.namespace in FLANNEL_NAMESPACES
            and (p.labels.get("app") == "flannel" or p.labels.get("k8s-app") == "flannel")
        ]

    def flannel_daemonsets(self) -> list[DaemonSetInfo]:
        return [
            d
            for d in self.daemonsets
            if d.namespace in FLANNEL_NAMESPACES
            and (
                "flannel" in d.name
                or d.labels.get("app") == "flannel"
                or d.labels.get("k8s-app") == "flannel"
            )
        ]

    def flannel_configmap(self) -> ConfigMapInfo | None:
        for ns in FLANNEL_NAMESPACES:
            cm = self.configmaps.get((ns, "kube-flannel-cfg"))
            if cm is not None:
                return cm
        return None

    def net_conf(self) -> dict[str, Any] | None:
        cm = self.flannel_configmap()
        if cm is None or "net-conf.json" not in cm.data:
            return None
        try:
            value = json.loads(cm.data["net-conf.json"])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def log(self, pod: PodInfo, container: str = "kube-flannel") -> tuple[str, str]:
        """(source, text): the previous container's log if it crashed, else the current one."""
        for previous in (True, False):
            text = self.logs.get((pod.namespace, pod.name, container, previous))
            if text:
                which = "previous" if previous else "current"
                return f"API: logs of {pod.namespace}/{pod.name} ({container}, {which})", text
        return "", ""

    def probe(self, node: str, probe_id: str) -> ProbeOutput | None:
        return self.probes.get(node, {}).get(probe_id)

    def node(self, name: str) -> NodeInfo | None:
        index = self.__dict__.get("_node_index")
        if index is None or len(index) != len(self.nodes):
            index = self.__dict__["_node_index"] = {n.name: n for n in self.nodes}
        return index.get(name)


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
