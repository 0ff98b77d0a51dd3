"""Everything diagnose looks at, gathered once, from a live cluster or a support bundle.

Rules read only this; they never call the API or a node. Missing parts (no node probes in a bundle,
a node that did not answer) are recorded in `gaps` and lower what can be concluded.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from flannel_bot.diagnosis.catalogue import (
    CATALOGUE,
    DNS_LOG,
    EVENT,
    FLANNEL_LOG,
    K3S_JOURNAL,
    KERNEL_LOG,
    KUBE_PROXY_LOG,
    KUBELET_JOURNAL,
    NODE_CONDITION,
    Sighting,
)
from flannel_bot.diagnosis.net_conf import Backend, NetConf, backend_of, parse_net_conf
from flannel_bot.diagnosis.peer_tables import PeersWanted, PeerTable, peers_wanted
from flannel_bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    ServiceInfo,
)
from flannel_bot.ports.probes import BY_ID, ProbeOutput

if TYPE_CHECKING:
    from flannel_bot.diagnosis.node_facts import Fact

T = TypeVar("T")

FLANNEL_NAMESPACES = ("kube-flannel", "kube-system")
FLANNEL_SELECTORS = ("app=flannel", "k8s-app=flannel")
BACKEND_TYPE = "flannel.alpha.coreos.com/backend-type"
FLANNEL_CONFIGMAPS = (
    ("kube-flannel", "kube-flannel-cfg"),
    ("kube-system", "kube-flannel-cfg"),
    ("kube-system", "rke2-canal-config"),
    ("kube-system", "canal-config"),
)
# the labels other network plugins' node agents carry (canal is not here: it runs flannel)
OTHER_CNIS = {
    "calico": ("calico-node",),
    "cilium": ("cilium",),
    "weave": ("weave-net",),
    "kube-router": ("kube-router",),
    "antrea": ("antrea",),
    "kube-ovn": ("kube-ovn-cni",),
}
# the first plugin in OTHER_CNIS that a pod's app label names
_CNI_OF_APP = {app: cni for cni, apps in reversed(OTHER_CNIS.items()) for app in apps}
_EMPTY = ProbeOutput(0, "")


def distribution_of(nodes: Iterable[NodeInfo]) -> str:
    """ "k3s" or "rke2" when a kubelet's version says so (v1.30.2+k3s1, v1.29.4+rke2r1), else
    ""; the distributions that run flannel their own way."""
    versions = [n.kubelet_version for n in nodes]
    for name in ("k3s", "rke2"):
        if any(f"+{name}" in v for v in versions):
            return name
    return ""


@dataclass(frozen=True)
class ScannedLog:
    """`CATALOGUE.found_in(where, text)`, computed elsewhere for this text."""

    where: str
    text: str
    found: tuple[tuple[int, str, int], ...]


@dataclass
class Evidence:
    nodes: list[NodeInfo] = field(default_factory=list)
    pods: list[PodInfo] = field(default_factory=list)
    daemonsets: list[DaemonSetInfo] = field(default_factory=list)
    configmaps: dict[tuple[str, str], ConfigMapInfo] = field(default_factory=dict)
    events: list[EventInfo] = field(default_factory=list)
    services: dict[tuple[str, str], ServiceInfo] = field(default_factory=dict)
    logs: dict[tuple[str, str, str, bool], str] = field(default_factory=dict)
    # what the catalogue found in a log, where another process read and scanned it (see
    # logs_ahead); used only while `logs` holds that very text and it is read as that `where`
    log_scans: dict[tuple[str, str, str, bool], ScannedLog] = field(default_factory=dict)
    rbac: Rbac = field(default_factory=Rbac)
    probes: dict[str, dict[str, ProbeOutput]] = field(default_factory=dict)
    # node -> probe id -> its VXLAN peer table as reduced when read (see peer_tables); the
    # probe output kept in `probes` is then the reduced one
    peer_tables: dict[str, dict[str, PeerTable]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    deep: dict[str, dict[str, bool]] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    # (namespace, list) not read whole: the API refused it, or a bundle's file is absent,
    # refused, corrupt or cut; an empty list from there proves nothing
    unread: set[tuple[str, str]] = field(default_factory=set)
    source: str = "live"

    # -- views the rules share ------------------------------------------------------------------

    def flannel_pods(self) -> list[PodInfo]:
        """flanneld's pods: flannel's own DaemonSet (either namespace, any release) or canal's
        (RKE2's default: flannel runs beside calico as the `kube-flannel` container)."""
        return list(self._system_pods()[0])

    def has_flannel_pods(self) -> bool:
        """Whether `flannel_pods` has any, without a copy of them (rules ask once per node)."""
        return bool(self._system_pods()[0])

    def kube_proxy_pods(self) -> list[PodInfo]:
        return list(self._system_pods()[1])

    def dns_pods(self) -> list[PodInfo]:
        """The cluster DNS pods: ordinary pods on the pod network, so their log shows what any
        pod meets (the API Service unreachable, a firewall rejecting pod traffic)."""
        return list(self._system_pods()[2])

    def _system_pods(self) -> tuple[list[PodInfo], list[PodInfo], list[PodInfo]]:
        """flannel's, kube-proxy's and the cluster DNS's pods, in one pass over every pod, kept
        while `pods` is the same list: the log reads, the log scan and the rules each ask, some
        once per node (callers hand out copies)."""
        cached = self.__dict__.get("_kept_system_pods")
        if cached is None or cached[0] is not self.pods or cached[1] != len(self.pods):
            flannel: list[PodInfo] = []
            proxy: list[PodInfo] = []
            dns: list[PodInfo] = []
            for p in self.pods:
                labels = p.labels
                app = labels.get("k8s-app")
                if app == "kube-proxy":
                    proxy.append(p)
                if p.namespace in FLANNEL_NAMESPACES:
                    if labels.get("app") == "flannel" or app in ("flannel", "canal"):
                        flannel.append(p)
                    if app == "kube-dns" and p.namespace == "kube-system":
                        dns.append(p)
            cached = self.__dict__["_kept_system_pods"] = (
                self.pods,
                len(self.pods),
                (flannel, proxy, dns),
            )
        kept: tuple[list[PodInfo], list[PodInfo], list[PodInfo]] = cached[2]
        return kept

    def flannel_daemonsets(self) -> list[DaemonSetInfo]:
        return [
            d
            for d in self.daemonsets
            if d.namespace in FLANNEL_NAMESPACES
            and (
                "flannel" in d.name
                or d.labels.get("app") == "flannel"
                or d.labels.get("k8s-app") in ("flannel", "canal")
            )
        ]

    def flannel_unread(self) -> list[str]:
        """The lists flannel's DaemonSet and pods are read from that were not read whole, as
        `<namespace>/<list>`: while there are any, flannel's absence is not established."""
        return sorted(
            f"{ns}/{kind}"
            for ns, kind in self.unread
            if ns in FLANNEL_NAMESPACES and kind in ("daemonsets", "pods")
        )

    def flannel_configmap(self) -> ConfigMapInfo | None:
        """flannel's ConfigMap: kube-flannel-cfg (either namespace), or canal's."""
        for key in FLANNEL_CONFIGMAPS:
            cm = self.configmaps.get(key)
            if cm is not None:
                return cm
        return None

    def flannel_net_conf(self) -> NetConf | None:
        """net-conf.json as flanneld reads it, with what it would refuse: flannel's ConfigMap,
        or the file k3s/RKE2 generates on a node; None if neither was read."""
        cm = self.flannel_configmap()
        if cm is None:
            for outputs in self.probes.values():
                out = outputs.get("k3s-flannel-conf")
                if out is not None and out.ok and out.stdout.strip():
                    return parse_net_conf(out.stdout)
            return None
        if "net-conf.json" not in cm.data:
            return NetConf(problems=(f"{cm.namespace}/{cm.name} has no net-conf.json",))
        return parse_net_conf(cm.data["net-conf.json"])

    def backend(self) -> Backend:
        """flannel's backend: from net-conf.json, else the backend-type flanneld annotates
        every node with, else vxlan (the default of every manifest and of k3s)."""
        conf = self.flannel_net_conf()
        if conf is not None and not conf.problems:
            return backend_of(conf)
        kinds = {n.annotations.get(BACKEND_TYPE, "") for n in self.nodes} - {""}
        return backend_of(NetConf(backend=kinds.pop() if len(kinds) == 1 else "vxlan"))

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

    def peer_table(self, node: str, probe_id: str) -> PeerTable | None:
        """The node's peer table as reduced when read; None when the evidence holds the table
        whole (or it was replaced since: the reduction describes one output only)."""
        table = self.peer_tables.get(node, {}).get(probe_id)
        if table is None or table.out is not self.probe(node, probe_id):
            return None
        return table

    def peers_wanted(self) -> PeersWanted:
        """The VXLAN entries flanneld programs for each peer, from the Node annotations."""
        cached = self.__dict__.get("_peers_wanted")
        if cached is None or cached[0] is not self.nodes or cached[1] != len(self.nodes):
            cached = self.__dict__["_peers_wanted"] = (
                self.nodes,
                len(self.nodes),
                peers_wanted(self.nodes),
            )
        wanted: PeersWanted = cached[2]
        return wanted

    def sightings(self) -> list[Sighting]:
        """Every catalogued line in the logs, events, node conditions and node journals, once."""
        cached: list[Sighting] | None = self.__dict__.get("_sightings")
        if cached is None:
            cached = self.__dict__["_sightings"] = list(_scan(self))
        return cached

    def sighted(
        self, finding: str, node: str | None = None, corroborating: bool = False
    ) -> list[Sighting]:
        """Sightings of lines that establish `finding` (on `node`, when given); with
        `corroborating`, also the lines that only support it (informational, transient)."""
        return [
            s
            for s in self.sightings()
            if s.finding == finding
            and (node is None or s.node == node)
            and (corroborating or s.message.establishes)
        ]

    def distribution(self) -> str:
        """ "k3s" or "rke2" when the kubelets say so (v1.30.2+k3s1, +rke2r1), else "" (kubeadm
        and the other installers that run flannel as a DaemonSet). Rules ask it once per node,
        so it is kept while the nodes and the probed nodes are the same lists."""
        sizes = (len(self.nodes), len(self.probes))
        cached = self.__dict__.get("_distribution")
        if cached and cached[0] is self.nodes and cached[1] is self.probes and cached[2] == sizes:
            return str(cached[3])
        named = distribution_of(self.nodes)
        if not named:
            journals = " ".join(
                o["k3s-journal"].stdout for o in self.probes.values() if "k3s-journal" in o
            )
            if "level=" in journals and "msg=" in journals:  # k3s/RKE2 log with logrus fields
                named = "rke2" if "rke2" in journals else "k3s"
        self.__dict__["_distribution"] = (self.nodes, self.probes, sizes, named)
        return named

    def flannel_embedded(self) -> bool:
        """flannel running inside k3s (its default): no flannel pods or DaemonSet, and no other
        network plugin's node agent."""
        if self.distribution() != "k3s" or self.flannel_pods() or self.flannel_daemonsets():
            return False
        return not self.other_cni()

    def other_cni(self) -> str:
        """The network plugin this cluster runs instead of flannel, when its pods show one."""
        # several rules ask: one pass over the pods, kept while `pods` is the same list
        cached = self.__dict__.get("_other_cni")
        if cached is None or cached[0] is not self.pods or cached[1] != len(self.pods):
            cni = ""
            for pod in self.pods:
                labels = pod.labels
                app = labels.get("k8s-app") or labels.get("app") or labels.get("name", "")
                if app in _CNI_OF_APP:
                    cni = _CNI_OF_APP[app]
                    break
            cached = self.__dict__["_other_cni"] = (self.pods, len(self.pods), cni)
        found: str = cached[2]
        return found

    def probed(self) -> list[str]:
        """The nodes whose probes answered, in name order."""
        return sorted(self.probes)

    def fact(self, node: str, fact: Fact[T]) -> T | None:
        """A node fact parsed from its probe (once); None when the node was not probed for it."""
        out = self.probe(node, fact.probe.id)
        if out is None:
            return None
        cache: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_facts", {})
        key = (node, fact.probe.argv, fact.parse, out)  # a replaced output is parsed anew
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
        conf = self.flannel_net_conf()
        return conf.network if conf is not None else None

    def api_service_ip(self) -> str:
        svc = self.services.get(("default", "kubernetes"))
        return svc.cluster_ip if svc and svc.cluster_ip else "10.96.0.1"

    def flannel_namespace(self) -> str:
        ds = self.flannel_daemonsets()
        return ds[0].namespace if ds else "kube-flannel"

    def node(self, name: str) -> NodeInfo | None:
        cached = self.__dict__.get("_node_index")
        if cached is None or cached[0] is not self.nodes or len(cached[1]) != len(self.nodes):
            cached = self.__dict__["_node_index"] = (self.nodes, {n.name: n for n in self.nodes})
        return cached[1].get(name)


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def matching_lines(text: str, pattern: str, limit: int = 3) -> list[str]:
    """The last `limit` lines of a log matching a regular expression, stripped."""
    rx = re.compile(pattern)
    return [line.strip() for line in text.splitlines() if rx.search(line)][-limit:]


def log_places(ev: Evidence) -> dict[tuple[str, str], tuple[PodInfo, str]]:
    """(namespace, pod) -> (the pod, which catalogue its logs are read with), for the pods
    whose logs diagnose reads: flannel's, kube-proxy's, the cluster DNS's."""
    logged = {(p.namespace, p.name): (p, FLANNEL_LOG) for p in ev.flannel_pods()}
    logged.update({(p.namespace, p.name): (p, KUBE_PROXY_LOG) for p in ev.kube_proxy_pods()})
    logged.update({(p.namespace, p.name): (p, DNS_LOG) for p in ev.dns_pods()})
    return logged


def _scan(ev: Evidence) -> Iterator[Sighting]:
    """What the catalogue finds in every text the evidence holds, tied to a node where it can be."""
    scan = CATALOGUE.scan
    logged = log_places(ev)
    for log_key, text in ev.logs.items():
        ns, name, container, previous = log_key
        pod, where = logged.get((ns, name), (None, ""))
        if pod is not None:
            which = "previous" if previous else "current"
            label = f"API: logs of {ns}/{name} ({container}, {which})"
            done = ev.log_scans.get(log_key)
            if done is not None and done.where == where and done.text is text:
                yield from CATALOGUE.sightings_of(where, done.found, pod.node, label)
            else:
                yield from scan(where, text, pod.node, label)
    # only the pods events name are looked up (not a map of 150,000 pods built for 14,000
    # events): by name first, which most pods fail without a key of their own being made
    named = {(e.involved_namespace, e.involved_name) for e in ev.events}
    names = {name for _, name in named}
    pod_nodes: dict[tuple[str, str], str] = {}
    # a pod still waiting to start, or stuck terminating, still has the problem its events
    # name; an event outlives its cause by an hour
    waiting: set[tuple[str, str]] = set()
    for p in ev.pods:
        if p.name in names and (key := (p.namespace, p.name)) in named:
            pod_nodes[key] = p.node
            if p.phase == "Pending" or p.deletion:
                waiting.add(key)
    for e in ev.events:
        if e.involved_kind == "Pod" and (e.involved_namespace, e.involved_name) not in waiting:
            continue
        if e.involved_kind == "Node":
            node = e.involved_name
        else:
            node = e.source_host or pod_nodes.get((e.involved_namespace, e.involved_name), "")
        label = f"API: event {e.reason} on {e.involved_name}"
        yield from scan(EVENT, e.message, node, label)
    # a node condition's message is one of a few the kubelet says on every node: each is
    # scanned once (10,000 at 5,000 nodes), its sightings tied to each node that says it
    said: dict[str, list[Sighting]] = {}
    for n in ev.nodes:
        for c in n.conditions:
            if c.message:
                label = f"API: node {n.name} condition {c.type}={c.status}"
                found = said.get(c.message)
                if found is None:
                    found = said[c.message] = list(scan(NODE_CONDITION, c.message, "", ""))
                for s in found:
                    yield Sighting(s.message, n.name, label, s.line, s.count)
    for node, outputs in ev.probes.items():
        for probe_id, where in JOURNALS.items():
            out = outputs.get(probe_id)
            if out is None or not out.stdout:
                continue
            label = f"{node}: {' '.join(BY_ID[probe_id].argv)}"
            if where != K3S_JOURNAL:
                yield from scan(where, out.stdout, node, label)
                continue
            text = since_flannel_came_up(out.stdout)
            yield from scan(K3S_JOURNAL, text, node, label)
            # k3s's kubelet and containerd log into the same journal
            for seen in scan(KUBELET_JOURNAL, text, node, label):
                if K3S_JOURNAL not in seen.message.where:
                    yield seen


K3S_STARTED = re.compile(r"Starting (?:k3s|rke2)\b")
FLANNEL_UP = re.compile(r"Running flannel backend|Wrote (?:flannel )?subnet file")


def since_flannel_came_up(journal: str) -> str:
    """The k3s/RKE2 journal from the start of the last run in which flannel came up: what the
    runs before it said is history. All of it when flannel never came up (a crash loop's
    earlier runs still say why)."""
    lines = journal.splitlines()
    up = [i for i, line in enumerate(lines) if FLANNEL_UP.search(line)]
    if not up:
        return journal
    starts = [i for i in range(up[-1] + 1) if K3S_STARTED.search(lines[i])]
    return "\n".join(lines[starts[-1] if starts else 0 :])


JOURNALS = {
    "kubelet-journal": KUBELET_JOURNAL,
    "k3s-journal": K3S_JOURNAL,
    "kernel-log": KERNEL_LOG,
}
