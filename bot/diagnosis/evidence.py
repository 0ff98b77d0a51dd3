"""Everything diagnose looks at, gathered once, from a live cluster or a support bundle.

Rules read only this; they never call the API or a node. Missing parts (no node probes in a bundle,
a node that did not answer) are recorded in `gaps` and lower what can be concluded.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    ServiceInfo,
)
from bot.ports.probes import ProbeOutput

if TYPE_CHECKING:
    from bot.diagnosis.node_facts import Fact

T = TypeVar("T")

FLANNEL_NAMESPACES = ("kube-flannel", "kube-system")
FLANNEL_SELECTORS = ("app=flannel", "k8s-app=flannel")


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

    def probed(self) -> list[str]:
        """The nodes whose probes answered, in name order."""
        return sorted(self.probes)

    def fact(self, node: str, fact: Fact[T]) -> T | None:
        """A node fact parsed from its probe (once); None when the node was not probed for it."""
        out = self.probe(node, fact.probe.id)
        if out is None:
            return None
        cache: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_facts", {})
        key = (node, fact.probe.argv, fact.parse)
        if key not in cache:
            cache[key] = fact.parse(out)
        value: T = cache[key]
        return value

    def flannel_pods_by_node(self) -> dict[str, PodInfo]:
        return {p.node: p for p in self.flannel_pods() if p.node}

    def flannel_logs(self) -> Iterator[tuple[PodInfo, str, str]]:
        """(pod, source, text) for each flannel pod with a log to quote."""
        for pod in self.flannel_pods():
            source, text = self.log(pod)
            if text:
                yield pod, source, text

    def stuck_pod_events(self, text: str) -> list[EventInfo]:
        """Events saying `text` about pods that are still waiting for a sandbox: an event
        outlives its cause by an hour, a stuck pod does not."""
        pending = {(p.namespace, p.name) for p in self.pods if p.phase == "Pending"}
        return [
            e
            for e in self.events
            if text in e.message and (e.involved_namespace, e.involved_name) in pending
        ]

    def network(self) -> ipaddress.IPv4Network | None:
        """flannel's Network from net-conf.json, when it is there and valid."""
        conf = self.net_conf()
        try:
            return ipaddress.IPv4Network(str(conf["Network"])) if conf else None
        except (KeyError, ValueError):
            return None

    def api_service_ip(self) -> str:
        svc = self.services.get(("default", "kubernetes"))
        return svc.cluster_ip if svc and svc.cluster_ip else "10.96.0.1"

    def flannel_namespace(self) -> str:
        ds = self.flannel_daemonsets()
        return ds[0].namespace if ds else "kube-flannel"

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


def matching_lines(text: str, pattern: str, limit: int = 3) -> list[str]:
    """The last `limit` lines of a log matching a regular expression, stripped."""
    rx = re.compile(pattern)
    return [line.strip() for line in text.splitlines() if rx.search(line)][-limit:]
