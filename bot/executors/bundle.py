"""Support bundles: diagnose a cluster from files, and write those files from a live cluster.

Why: the person who can see a broken cluster is often not the one who can explain it, and a
cluster in a customer's network cannot be reached from chat. A bundle is the directory that
`kubectl cluster-info dump --output-directory DIR` writes, plus a few files kubectl does not write
(ConfigMaps, RBAC, previous logs, node probe outputs), each of which can also be made by hand.
`BundleReader` answers the calls of the live executors (`ClusterReader` and `NodeExecutor`) from
those files, so `collect` and every rule run unchanged on it; `write_bundle` writes the same layout
from a live cluster (for `flannel-bot collect DIR`), and reading it back gives the evidence a live
`collect` gives.

A missing, unreadable or corrupt file never stops a diagnosis: the reader answers as if that part
were empty and records in `gaps` what could not be checked, which lowers what can be concluded.
A probe the bundle does not hold is left out of the evidence, never reported as a failed command.

Layout (`<ns>` is a namespace, `<pod>` a pod, `<c>` a container, `<node>` a node, `<id>` a probe
id from `bot.ports.probes.PROBES`):

    nodes.json                    NodeList. kubectl cluster-info dump.
                                  Lost: node readiness, conditions, podCIDRs and flannel
                                  annotations; and no node is probed (names come from here).
    <ns>/pods.json                PodList. kubectl cluster-info dump.
                                  Lost: flannel / kube-proxy pod states and restarts; their logs.
    <ns>/events.json              EventList. kubectl cluster-info dump.
                                  Lost: BackOff, FailedCreatePodSandBox and other events of <ns>.
    <ns>/daemonsets.json          DaemonSetList. kubectl cluster-info dump.
                                  Lost: flannel's DaemonSet (desired/ready counts, image, args).
    <ns>/services.json            ServiceList. kubectl cluster-info dump.
                                  Lost: the Services of <ns>; `default/services.json` holds the
                                  `kubernetes` Service (dump `default` too).
    <ns>/deployments.json         kubectl cluster-info dump. Not read by flannel-bot (for people).
    <ns>/replicasets.json         kubectl cluster-info dump. Not read by flannel-bot (for people).
    <ns>/replication-controllers.json
                                  kubectl cluster-info dump. Not read by flannel-bot (for people).
    <ns>/<pod>/logs.txt           kubectl cluster-info dump: per container, between
                                  `==== START logs for container <c> of pod <ns>/<pod> ====` and
                                  `==== END logs for container <c> of pod <ns>/<pod> ====`; a line
                                  `Request log error: ...` inside a block is a failed request.
                                  Lost: the pod's current logs (flanneld's last error).
  Optional extras:
    <ns>/configmaps.json          kubectl get configmaps -n <ns> -o json (for kube-flannel and
                                  kube-system).
                                  Lost: kube-flannel-cfg (net-conf.json) and kube-proxy's config.
    rbac.json                     kubectl get clusterroles,clusterrolebindings -o json (a List).
                                  Lost: flannel's RBAC is not checked (Rbac(readable=False)).
    <ns>/<pod>/logs-<c>-previous.txt
                                  kubectl logs -n <ns> <pod> -c <c> --previous
                                  Lost: why a container that restarted ended its last run.
    probes/<node>/<id>.txt        the probe's argv run on the node as root: its stdout;
    probes/<node>/<id>.err        its stderr (default empty);
    probes/<node>/<id>.exit       its exit code (default 0).
                                  Lost: that node-side check (sysctls, subnet.env, CNI config,
                                  routes, iptables, ...); a missing `probes/` loses all of them.
    probes/<node>/UNREACHABLE     the node did not answer; the text says why.
    errors.txt                    written by `write_bundle`: what it could not collect and why,
                                  one line each; every line becomes a gap.

kubectl writes the namespaced lists for every namespace it dumps (even when empty), logs.txt for
every pod, and only current logs; `examples/dump/README.md` has the commands that add the extras by
hand and the per-node probe script. `write_bundle` writes the lists for every namespace that has
any object (plus kube-system, kube-flannel and default), logs for the pods of kube-system and
kube-flannel (their last `log_lines` lines), previous logs of containers that restarted, and the
probe outputs of every node (or of `only`).
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.diagnosis.collect import collect, probe_nodes
from bot.diagnosis.evidence import FLANNEL_NAMESPACES, Evidence, ProbeOutput
from bot.errors import BotError, ExecutorError, NodeUnreachable, NotFound, UserError
from bot.executors import selectors
from bot.executors.kube import (
    KubeClient,
    parse_configmap,
    parse_daemonset,
    parse_event,
    parse_node,
    parse_pod,
    parse_service,
)
from bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    RbacRule,
    ServiceInfo,
)
from bot.ports.nodes import CommandResult, NodeExecutor
from bot.ports.probes import PROBES, Probe

Json = dict[str, Any]

PROBES_DIR = "probes"
UNREACHABLE = "UNREACHABLE"
ERRORS = "errors.txt"
RBAC = "rbac.json"
# kubectl cluster-info dump's files per namespace: file stem -> API resource
NAMESPACED_LISTS: Mapping[str, str] = {
    "events": "events",
    "replication-controllers": "replicationcontrollers",
    "services": "services",
    "daemonsets": "daemonsets",
    "deployments": "deployments",
    "replicasets": "replicasets",
    "pods": "pods",
}
READ_LISTS = frozenset({"pods", "events", "daemonsets", "services"})  # the rest is for people
# Always dumped by write_bundle: flannel lives in one of the first two, `default` holds the
# `kubernetes` Service.
BASE_NAMESPACES = ("kube-system", "kube-flannel", "default")
LOG_LINES = 1000

_BY_ARGV: Mapping[tuple[str, ...], Probe] = {p.argv: p for p in PROBES}
# Kubernetes names (DNS-1123 subdomains, container names) are safe path components; a name from a
# tampered bundle that is not (`..`, `/`) is never joined to a path.
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")
_START = re.compile(
    r"^==== START logs for container (?P<container>\S+) "
    r"of pod (?P<ns>[^/\s]+)/(?P<pod>\S+) ====\n?",
    re.M,
)
_LOG_ERROR = re.compile(r"^(?:Create log request error|Request log error): (?P<why>.*)\n?\Z", re.S)


_LOST_NODES = (
    "node readiness, conditions, podCIDRs and flannel annotations are unknown, and no node was "
    "probed (their names come from this file)"
)


def _lost_services(ns: str) -> str:
    if ns == "default":
        return "the Services of default are unknown (the `kubernetes` Service flanneld reaches)"
    return f"the Services of {ns} are unknown"


# what is lost when <ns>/<kind>.json is missing
_LOST: Mapping[str, Callable[[str], str]] = {
    "pods": lambda ns: (
        f"the pods of {ns} (flannel and kube-proxy pod states, restarts) are unknown and their "
        f"logs were not read"
    ),
    "events": lambda ns: f"the events of {ns} (BackOff, FailedCreatePodSandBox, ...) are unknown",
    "daemonsets": lambda ns: (
        f"the DaemonSets of {ns} (flannel's desired/ready counts, image and args) are unknown"
    ),
    "services": _lost_services,
    "configmaps": lambda ns: (
        f"the ConfigMaps of {ns} (kube-flannel-cfg's net-conf.json, kube-proxy's config) were "
        f"not checked"
    ),
}


@dataclass(frozen=True)
class _LogFailed:
    """A block of logs.txt that holds kubectl's error line instead of a log."""

    why: str


class BundleReader:
    """`ClusterReader` and `NodeExecutor` over a support bundle directory (see the module doc).

    Reads lazily and caches; never raises for a missing or corrupt file (it records a gap and
    answers empty), only where the live executor would too (NotFound for an absent object,
    NodeUnreachable for a node the bundle marks UNREACHABLE). Writes (`delete_pod`,
    `patch_configmap`) raise ExecutorError: a bundle is a record, not a cluster.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            problem = "does not exist" if not self.path.exists() else "is not a directory"
            raise UserError(
                f"support bundle {self.path} {problem}: give the directory that `kubectl "
                f"cluster-info dump --output-directory DIR` wrote (see examples/dump/README.md)"
            )
        self._lock = threading.RLock()
        self._gaps: dict[str, None] = {}  # ordered set
        self._lists: dict[str, list[Json] | None] = {}
        self._logs: dict[tuple[str, str], dict[str, str | _LogFailed] | None] = {}
        self._missing_probes: set[tuple[str, str]] = set()
        self._read_errors_file()

    # -- what could not be concluded ------------------------------------------------------------

    @property
    def gaps(self) -> list[str]:
        """What the bundle lacked for the calls made so far, one sentence each."""
        with self._lock:
            return list(self._gaps)

    @property
    def missing_probes(self) -> frozenset[tuple[str, str]]:
        """(node, probe id) pairs asked for and answered with exit 127 because not in the bundle."""
        with self._lock:
            return frozenset(self._missing_probes)

    def _gap(self, text: str) -> None:
        with self._lock:
            self._gaps.setdefault(text, None)

    def _read_errors_file(self) -> None:
        text = self._text(ERRORS)
        for line in (text or "").splitlines():
            if line.strip():
                self._gap(f"when the bundle was written: {line.strip()}")

    # -- files ----------------------------------------------------------------------------------

    def _text(self, rel: str) -> str | None:
        """A file's text, None if absent; undecodable bytes are replaced, not fatal."""
        try:
            return (self.path / rel).read_bytes().decode("utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            self._gap(f"{rel} could not be read ({exc.strerror or exc})")
            return None

    def _items(self, rel: str, lost: str, namespace: str | None = None) -> list[Json]:
        """The items of a Kubernetes list file; [] and a gap when missing or corrupt."""
        with self._lock:
            if rel not in self._lists:
                self._lists[rel] = self._load_items(rel, lost, namespace)
            items = self._lists[rel]
        if items is None:
            return []
        return items

    def _load_items(self, rel: str, lost: str, namespace: str | None) -> list[Json] | None:
        text = self._text(rel)
        if text is None:
            self._gap(f"{rel} is missing: {lost}")
            return None
        try:
            obj = json.loads(text)
        except ValueError as exc:
            self._gap(f"{rel} is not valid JSON ({exc}): {lost}")
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
            self._gap(f"{rel} is not a Kubernetes list (no `items`): {lost}")
            return None
        items = [item for item in obj["items"] if isinstance(item, dict)]
        if len(items) != len(obj["items"]):
            skipped = len(obj["items"]) - len(items)
            self._gap(f"{rel}: {skipped} item(s) are not JSON objects and were skipped")
        if namespace is not None:  # hand-made files may leave the namespace to the directory
            for item in items:
                meta = item.get("metadata")
                if isinstance(meta, dict) and not meta.get("namespace"):
                    meta["namespace"] = namespace
        return items

    def namespaces(self) -> list[str]:
        """The namespace directories in the bundle."""
        return sorted(
            d.name
            for d in self.path.iterdir()
            if d.is_dir() and d.name != PROBES_DIR and _NAME.match(d.name)
        )

    def _namespaced(self, kind: str, namespace: str | None, what: str) -> list[Json]:
        """Items of `<ns>/<kind>.json` for one namespace, or of every namespace when None."""
        if namespace is None:
            return [
                item
                for ns in self.namespaces()
                for item in self._items(f"{ns}/{kind}.json", _LOST[kind](ns), ns)
            ]
        if not _NAME.match(namespace):
            return []
        if not (self.path / namespace).is_dir():
            self._namespace_missing(namespace, what)
            return []
        return self._items(f"{namespace}/{kind}.json", _LOST[kind](namespace), namespace)

    def _namespace_missing(self, namespace: str, what: str) -> None:
        if namespace == "kube-flannel" and (self.path / "kube-system").is_dir():
            return  # older manifests put flannel in kube-system; then kube-flannel need not exist
        self._gap(
            f"namespace {namespace} is not in the bundle (no {namespace}/ directory): its {what} "
            f"were not checked (dump it too: --namespaces ...,{namespace})"
        )

    # -- ClusterReader --------------------------------------------------------------------------

    def amend_evidence(self, ev: Evidence, deep: bool) -> None:
        """What `collect` cannot know about a bundle: missing probes are unknown, not failed;
        the reader's own notes on missing files replace collect's; deep checks need live nodes."""
        for node, probe_id in self.missing_probes:
            ev.probes.get(node, {}).pop(probe_id, None)
        ev.probes = {node: outputs for node, outputs in ev.probes.items() if outputs}
        ev.deep = {}
        gaps = self.gaps
        ev.gaps = [g for g in ev.gaps if not any(gap in g for gap in gaps)] + gaps
        if deep:
            ev.gaps.append(
                "the deep check (pinging each peer across the overlay) needs live nodes; a "
                "support bundle cannot answer it"
            )
        ev.source = f"bundle {self.path}"

    def list_nodes(self, label_selector: str | None = None) -> list[NodeInfo]:
        items = self._items("nodes.json", _LOST_NODES)
        return [parse_node(n) for n in items if self._labels_match(label_selector, n)]

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]:
        fields = f"spec.nodeName={node}" if node else None
        return [
            parse_pod(p)
            for p in self._namespaced("pods", namespace, "pods")
            if self._labels_match(label_selector, p) and self._fields_match(fields, p)
        ]

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]:
        return [
            parse_daemonset(d)
            for d in self._namespaced("daemonsets", namespace, "DaemonSets")
            if self._labels_match(label_selector, d)
        ]

    def list_events(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> list[EventInfo]:
        """Events, oldest first, like the live client."""
        events = [
            parse_event(e)
            for e in self._namespaced("events", namespace, "events")
            if self._fields_match(field_selector, e)
        ]
        return sorted(events, key=lambda e: e.last_timestamp)

    def get_configmap(self, namespace: str, name: str) -> ConfigMapInfo:
        return parse_configmap(self._get("configmaps", namespace, name, "ConfigMaps"))

    def get_service(self, namespace: str, name: str) -> ServiceInfo:
        return parse_service(self._get("services", namespace, name, "Services"))

    def _get(self, kind: str, namespace: str, name: str, what: str) -> Json:
        rel = f"{namespace}/{kind}.json"
        if not _NAME.match(namespace) or not (self.path / namespace).is_dir():
            if namespace in FLANNEL_NAMESPACES or kind == "services":
                self._namespace_missing(namespace, what)
            raise NotFound(f"bundle {self.path}: namespace {namespace} is not in the bundle")
        for item in self._items(rel, _LOST[kind](namespace), namespace):
            if _field(item, "metadata.name") == name:
                return item
        if rel in self._lists and self._lists[rel] is None:
            raise NotFound(f"{rel} is missing: {_LOST[kind](namespace)}")
        raise NotFound(f"bundle {self.path}: {kind} {namespace}/{name} is not in {rel}")

    def read_rbac(self) -> Rbac:
        """ClusterRoles and ClusterRoleBindings from rbac.json; `readable=False` without it."""
        with self._lock:
            if RBAC not in self._lists:
                self._lists[RBAC] = self._load_items(
                    RBAC, "flannel's ClusterRole and ClusterRoleBinding were not checked", None
                )
            items = self._lists[RBAC]
        if items is None:
            return Rbac(readable=False)
        roles = [i for i in items if _kind(i) == "ClusterRole"]
        bindings = [i for i in items if _kind(i) == "ClusterRoleBinding"]
        return _parse_rbac(roles, bindings)

    def read_pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> str:
        if not (_NAME.match(namespace) and _NAME.match(pod)):
            raise NotFound(f"bundle {self.path}: no pod {namespace}/{pod}")
        blocks = self._log_blocks(namespace, pod)
        if container is None:
            container = self._default_container(namespace, pod, blocks)
        if not _NAME.match(container):
            raise NotFound(f"bundle {self.path}: no container {container!r} in {namespace}/{pod}")
        if previous:
            text = self._previous_log(namespace, pod, container)
        else:
            text = self._current_log(namespace, pod, container, blocks)
        return _tail(text, tail_lines)

    def _current_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        blocks: dict[str, str | _LogFailed] | None,
    ) -> str:
        rel = f"{namespace}/{pod}/logs.txt"
        if blocks is None:
            self._gap(f"{rel} is missing: the current logs of {namespace}/{pod} are unknown")
            raise NotFound(f"{rel} is missing")
        block = blocks.get(container)
        if block is None:
            self._gap(f"{rel} has no logs of container {container}: its current log is unknown")
            raise NotFound(f"{rel} has no logs of container {container}")
        if isinstance(block, _LogFailed):
            self._gap(
                f"{rel}: the log of container {container} could not be read when the bundle was "
                f"written ({block.why})"
            )
            raise ExecutorError(f"{rel}: log of container {container}: {block.why}")
        return block

    def _previous_log(self, namespace: str, pod: str, container: str) -> str:
        rel = f"{namespace}/{pod}/logs-{container}-previous.txt"
        text = self._text(rel)
        if text is not None:
            return text
        restarts = self._restarts(namespace, pod, container)
        if restarts:
            self._gap(
                f"{rel} is missing: why container {container} of {namespace}/{pod} ended its last "
                f"run is unknown (it restarted {restarts} times)"
            )
        raise NotFound(f"bundle {self.path}: no previous log of {container} in {namespace}/{pod}")

    def _restarts(self, namespace: str, pod: str, container: str) -> int:
        for p in self._namespaced("pods", namespace, "pods"):
            if _field(p, "metadata.name") == pod:
                for c in parse_pod(p).containers:
                    if c.name == container:
                        return c.restart_count
        return 0

    def _default_container(
        self, namespace: str, pod: str, blocks: dict[str, str | _LogFailed] | None
    ) -> str:
        """The container the API picks when none is named: the pod's only (non-init) one."""
        spec = [
            c.name
            for p in self._namespaced("pods", namespace, "pods")
            if _field(p, "metadata.name") == pod
            for c in parse_pod(p).containers
            if not c.init
        ]
        names = spec or list(blocks or {})
        if len(names) == 1:
            return names[0]
        raise ExecutorError(
            f"bundle {self.path}: a container name must be specified for pod {namespace}/{pod}, "
            f"choose one of: [{' '.join(names)}]"
        )

    def _log_blocks(self, namespace: str, pod: str) -> dict[str, str | _LogFailed] | None:
        key = (namespace, pod)
        with self._lock:
            if key not in self._logs:
                rel = f"{namespace}/{pod}/logs.txt"
                text = self._text(rel)
                self._logs[key] = None if text is None else self._split_logs(rel, text)
            return self._logs[key]

    def _split_logs(self, rel: str, text: str) -> dict[str, str | _LogFailed]:
        """kubectl's logs.txt, one entry per START/END block (a log need not end in a newline,
        so END may follow the last line directly)."""
        blocks: dict[str, str | _LogFailed] = {}
        pos = 0
        while (start := _START.search(text, pos)) is not None:
            container = start["container"]
            end_marker = (
                f"==== END logs for container {container} of pod {start['ns']}/{start['pod']} ===="
            )
            end = text.find(end_marker, start.end())
            if end < 0:  # cut off: keep what is there, up to the next block
                following = _START.search(text, start.end())
                end = following.start() if following else len(text)
                self._gap(f"{rel} is cut off: the log of container {container} may be incomplete")
                pos = end
            else:
                pos = end + len(end_marker)
            body = text[start.end() : end]
            failed = _LOG_ERROR.match(body)
            blocks[container] = _LogFailed(failed["why"].strip()) if failed else body
        if not blocks and text.strip():
            self._gap(f"{rel} has no `==== START logs for container` blocks: it was not read")
        return blocks

    # -- KubeExecutor's writes: a bundle is a record, nothing in it can be changed --------------

    def delete_pod(self, namespace: str, name: str) -> None:
        raise ExecutorError(self._read_only(f"delete pod {namespace}/{name}"))

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        raise ExecutorError(self._read_only(f"patch configmap {namespace}/{name}"))

    def object_exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        if kind == "ConfigMap" and namespace:
            try:
                self.get_configmap(namespace, name)
            except NotFound:
                return False
            return True
        if kind == "DaemonSet" and namespace:
            return any(d.name == name for d in self.list_daemonsets(namespace))
        raise ExecutorError(f"support bundle {self.path} does not record {kind} objects")

    def patch_daemonset(self, namespace: str, name: str, patch: Mapping[str, Any]) -> object:
        raise ExecutorError(self._read_only(f"patch daemonset {namespace}/{name}"))

    def create_object(self, obj: Mapping[str, Any]) -> None:
        kind = obj.get("kind", "object")
        raise ExecutorError(self._read_only(f"create {kind} {obj.get('metadata', {}).get('name')}"))

    def _read_only(self, what: str) -> str:
        return (
            f"cannot {what}: support bundle {self.path} is a read-only record of the cluster; "
            f"apply the fix to the live cluster"
        )

    # -- NodeExecutor ---------------------------------------------------------------------------

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        """The stored output of the probe with this argv; exit 127 if the bundle lacks it."""
        del timeout, sudo  # nothing runs
        argv = tuple(argv)
        self._check_reachable(node)
        probe = _BY_ARGV.get(argv)
        if probe is None:
            return CommandResult(
                node,
                argv,
                127,
                "",
                f"flannel-bot: `{shlex.join(argv)}` is not one of the probes a support bundle "
                f"stores ({', '.join(p.id for p in PROBES)}); it needs a live node",
            )
        output = self._probe_output(node, probe)
        if output is None:
            with self._lock:
                self._missing_probes.add((node, probe.id))
            return CommandResult(
                node,
                argv,
                127,
                "",
                f"flannel-bot: the support bundle {self.path} has no output of probe {probe.id} "
                f"for node {node} ({PROBES_DIR}/{node}/{probe.id}.txt)",
            )
        return CommandResult(node, argv, output.exit_code, output.stdout, output.stderr)

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> dict[str, list[CommandResult] | Exception]:
        """Like the SSH executor's fan-out; a node the bundle has no probes for is left out
        (it was not probed, which is a gap, not a failure of the node)."""
        results: dict[str, list[CommandResult] | Exception] = {}
        for node, argvs in commands.items():
            if not self._has_probes(node):
                continue
            try:
                results[node] = [self.run(node, argv, timeout or 0.0) for argv in argvs]
            except BotError as exc:
                results[node] = exc
        return results

    def _node_dir(self, node: str) -> Path | None:
        return self.path / PROBES_DIR / node if _NAME.match(node) else None

    def _has_probes(self, node: str) -> bool:
        if not (self.path / PROBES_DIR).is_dir():
            self._gap(
                f"{PROBES_DIR}/ is missing: no node-side check (sysctls, subnet.env, CNI config, "
                f"routes, iptables) was made; findings that need node probes were not checked"
            )
            return False
        where = self._node_dir(node)
        if where is None or not where.is_dir() or not any(where.iterdir()):
            self._gap(
                f"{PROBES_DIR}/{node}/ is missing: nothing on node {node} was checked (no probe "
                f"outputs)"
            )
            return False
        return True

    def _check_reachable(self, node: str) -> None:
        where = self._node_dir(node)
        if where is None:
            return
        text = self._text(f"{PROBES_DIR}/{node}/{UNREACHABLE}")
        if text is not None:
            why = text.strip() or f"node {node} did not answer when the bundle was written"
            raise NodeUnreachable(why, node=node)

    def _probe_output(self, node: str, probe: Probe) -> ProbeOutput | None:
        if self._node_dir(node) is None:
            return None
        base = f"{PROBES_DIR}/{node}/{probe.id}"
        stdout = self._text(f"{base}.txt")
        if stdout is None:
            if (self.path / PROBES_DIR / node).is_dir():
                self._gap(
                    f"{base}.txt is missing: {probe.why} on {node} was not checked "
                    f"(probe {probe.id})"
                )
            return None
        exit_text = self._text(f"{base}.exit")
        exit_code = 0
        if exit_text is not None and exit_text.strip():
            try:
                exit_code = int(exit_text.strip())
            except ValueError:
                self._gap(
                    f"{base}.exit is not an exit code ({exit_text.strip()[:40]!r}): probe "
                    f"{probe.id} on {node} was not used"
                )
                return None
        return ProbeOutput(exit_code, stdout, self._text(f"{base}.err") or "")

    # -- selectors ------------------------------------------------------------------------------

    def _labels_match(self, selector: str | None, obj: Json) -> bool:
        labels = _field_map(obj, "metadata.labels")
        return selectors.labels_match(selector, labels, where=f"bundle {self.path}: ")

    def _fields_match(self, selector: str | None, obj: Json) -> bool:
        return selectors.fields_match(
            selector, lambda key: _field(obj, key), where=f"bundle {self.path}: "
        )


def _tail(text: str, lines: int | None) -> str:
    if lines is None or lines < 0:
        return text
    kept = text.splitlines(keepends=True)
    return "".join(kept[len(kept) - lines :]) if lines else ""


def _field(obj: Json, dotted: str) -> str:
    """A field selector's value: the dotted path's value as the API compares it ("" if absent)."""
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None or isinstance(value, dict | list) else str(value)


def _field_map(obj: Json, dotted: str) -> dict[str, str]:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _kind(item: Json) -> str:
    kind = item.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return "ClusterRoleBinding" if "roleRef" in item else "ClusterRole"


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _parse_rbac(roles: Sequence[Json], bindings: Sequence[Json]) -> Rbac:
    """The same reading as KubeClient.read_rbac, from `kubectl get ... -o json` items."""

    def name(obj: Json) -> str:
        meta = obj.get("metadata")
        return str(meta.get("name") or "") if isinstance(meta, dict) else ""

    return Rbac(
        roles={
            name(r): tuple(
                RbacRule(
                    _strs(rule.get("apiGroups")),
                    _strs(rule.get("resources")),
                    _strs(rule.get("verbs")),
                )
                for rule in (r.get("rules") or [])
                if isinstance(rule, dict)
            )
            for r in roles
        },
        bindings=tuple(
            (
                name(b),
                _field(b, "roleRef.name"),
                tuple(
                    (str(s.get("namespace") or ""), str(s.get("name") or ""))
                    for s in (b.get("subjects") or [])
                    if isinstance(s, dict) and s.get("kind") == "ServiceAccount"
                ),
            )
            for b in bindings
        ),
    )


def evidence_from_bundle(
    path: Path | str, only: Sequence[str] = (), deep: bool = False
) -> Evidence:
    """`collect` over a support bundle, with what the bundle lacked appended to `gaps`."""
    reader = BundleReader(path)
    return collect(reader, reader, only, deep=deep)


# -- writing a bundle from a live cluster -----------------------------------------------------


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[str] = []

    def json(self, rel: str, obj: Any) -> None:
        self.text(rel, json.dumps(obj, indent=4, ensure_ascii=False) + "\n")

    def text(self, rel: str, text: str) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))

    def safe(self, what: str, name: str) -> bool:
        if _NAME.match(name):
            return True
        self.errors.append(f"skipped {what} {name!r}: not usable as a file name")
        return False


def _items_of(obj: Json) -> list[Json]:
    items = obj.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _namespace_of(item: Json) -> str:
    return _field(item, "metadata.namespace")


def write_bundle(
    kube: KubeClient,
    nodes: NodeExecutor | None,
    path: Path | str,
    only: Sequence[str] = (),
    timeout: float = 30.0,
    *,
    log_lines: int | None = LOG_LINES,
) -> Path:
    """Write a support bundle of the live cluster into `path` (a new or empty directory).

    Lists are kept as the API returns them; what could not be read is written to errors.txt and
    the rest is still written. Node probes run on every node (or `only`) within `timeout`, through
    the executor's `run_many` when it has one; `nodes` None writes no `probes/`.
    """
    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(
            f"{root} already exists and is not an empty directory: write the bundle into a new "
            f"directory, so no file of an older bundle is mistaken for this cluster's"
        )
    root.mkdir(parents=True, exist_ok=True)
    out = _Writer(root)

    node_list = _list_or_none(out, kube, "nodes", None)
    if node_list is not None:
        out.json("nodes.json", node_list)

    per_namespace = _namespaced_lists(out, kube)
    pods_by_ns: dict[str, list[Json]] = {}
    for ns, files in sorted(per_namespace.items()):
        if not out.safe("namespace", ns):
            continue
        for stem, obj in files.items():
            out.json(f"{ns}/{stem}.json", obj)
        pods_by_ns[ns] = _items_of(files.get("pods", {}))

    for ns in FLANNEL_NAMESPACES:
        configmaps = _list_or_none(out, kube, "configmaps", ns)
        if configmaps is not None and out.safe("namespace", ns):
            out.json(f"{ns}/configmaps.json", configmaps)

    _write_rbac(out, kube)
    for ns in FLANNEL_NAMESPACES:
        for pod in pods_by_ns.get(ns, []):
            _write_logs(out, kube, ns, pod, log_lines)

    if nodes is not None:
        names = list(only) or [parse_node(n).name for n in _items_of(node_list or {})]
        if not names:
            out.errors.append("no node names (the node list could not be read): no node probed")
        _write_probes(out, nodes, names, timeout)

    if out.errors:
        out.text(ERRORS, "".join(" ".join(line.split()) + "\n" for line in out.errors))
    return root


def _list_or_none(
    out: _Writer, kube: KubeClient, resource: str, namespace: str | None, *, note: bool = True
) -> Json | None:
    try:
        return kube.list_raw(resource, namespace)
    except ExecutorError as exc:
        if note:
            where = f" in {namespace}" if namespace else ""
            out.errors.append(f"could not list {resource}{where}: {exc}")
        return None


def _namespaced_lists(out: _Writer, kube: KubeClient) -> dict[str, dict[str, Json]]:
    """namespace -> kubectl file stem -> that namespace's part of the list.

    One call per resource across all namespaces; if that is refused, one per base namespace.
    Every namespace that has any object gets every file that could be listed, like kubectl's.
    The lists flannel-bot does not read are left out quietly when they cannot be listed."""
    everywhere: dict[str, Json | None] = {}
    served: dict[str, bool] = {}
    for stem, resource in NAMESPACED_LISTS.items():
        try:
            everywhere[stem] = kube.list_raw(resource)
        except NotFound:  # not served by this API server: asking per namespace will not help
            everywhere[stem], served[stem] = None, False
        except ExecutorError as exc:
            everywhere[stem], served[stem] = None, True
            if stem in READ_LISTS:
                out.errors.append(f"could not list {resource} in all namespaces: {exc}")
    namespaces = set(BASE_NAMESPACES) | {
        _namespace_of(item) for listed in everywhere.values() for item in _items_of(listed or {})
    }
    per_namespace: dict[str, dict[str, Json]] = {ns: {} for ns in namespaces - {""}}
    for stem, listed in everywhere.items():
        if listed is None:
            if not served[stem] and stem in READ_LISTS:
                out.errors.append(f"the API server does not serve {NAMESPACED_LISTS[stem]}")
            for ns in BASE_NAMESPACES if served[stem] else ():
                part = _list_or_none(out, kube, NAMESPACED_LISTS[stem], ns, note=stem in READ_LISTS)
                if part is not None:
                    per_namespace[ns][stem] = part
            continue
        envelope = {k: v for k, v in listed.items() if k != "items"}
        items = _items_of(listed)
        for ns, files in per_namespace.items():
            files[stem] = {**envelope, "items": [i for i in items if _namespace_of(i) == ns]}
    return per_namespace


def _write_rbac(out: _Writer, kube: KubeClient) -> None:
    items = []
    for resource, kind in (
        ("clusterroles", "ClusterRole"),
        ("clusterrolebindings", "ClusterRoleBinding"),
    ):
        listed = _list_or_none(out, kube, resource, None)
        if listed is None:
            return  # half the RBAC would read as "not bound": leave it out, it is a gap
        api_version = str(listed.get("apiVersion") or "rbac.authorization.k8s.io/v1")
        items += [{"apiVersion": api_version, "kind": kind, **i} for i in _items_of(listed)]
    out.json(
        RBAC,
        {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}},
    )


def _write_logs(
    out: _Writer, kube: KubeClient, ns: str, pod_obj: Json, log_lines: int | None
) -> None:
    pod = parse_pod(pod_obj)
    if not out.safe("pod", pod.name):
        return
    blocks = []
    for c in pod.containers:  # init containers first, as kubectl writes them
        if not out.safe("container", c.name):
            continue
        header = f"container {c.name} of pod {ns}/{pod.name} ===="
        try:
            body = kube.read_pod_log(ns, pod.name, c.name, tail_lines=log_lines)
        except ExecutorError as exc:
            body = f"Request log error: {exc}\n"
        blocks.append(f"==== START logs for {header}\n{body}==== END logs for {header}\n")
        if c.restart_count > 0:
            try:
                previous = kube.read_pod_log(ns, pod.name, c.name, True, log_lines)
            except ExecutorError as exc:
                out.errors.append(f"no previous log of {c.name} in {ns}/{pod.name}: {exc}")
            else:
                out.text(f"{ns}/{pod.name}/logs-{c.name}-previous.txt", previous)
    out.text(f"{ns}/{pod.name}/logs.txt", "".join(blocks))


def _write_probes(out: _Writer, nodes: NodeExecutor, names: Sequence[str], timeout: float) -> None:
    ev = Evidence()
    probe_nodes(nodes, [n for n in names if out.safe("node", n)], ev, timeout)
    for node, why in ev.unreachable.items():
        out.text(f"{PROBES_DIR}/{node}/{UNREACHABLE}", f"{why}\n")
    for node, outputs in ev.probes.items():
        for probe_id, output in outputs.items():
            base = f"{PROBES_DIR}/{node}/{probe_id}"
            out.text(f"{base}.txt", output.stdout)
            if output.stderr:
                out.text(f"{base}.err", output.stderr)
            if output.exit_code != 0:
                out.text(f"{base}.exit", f"{output.exit_code}\n")


__all__ = [
    "LOG_LINES",
    "NAMESPACED_LISTS",
    "BundleReader",
    "evidence_from_bundle",
    "write_bundle",
]
