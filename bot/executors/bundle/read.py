"""Reads a support bundle: `BundleReader` answers the live executors' calls from its files.

Why a reader and not a loader: `collect` and every rule then run unchanged on a bundle, and a
missing, unreadable or corrupt file never stops a diagnosis: the reader answers as if that part
were empty and records in `gaps` what could not be checked (the `Recording` port), so the
evidence says what could not be concluded. A probe the bundle does not hold is answered with
exit 127 and listed in `missing_probes`, so it is left out of the evidence, never reported as a
failed command. The layout is documented in the package docstring.

A bundle is someone else's directory, so it is read within bounds (`limits.Limits`): only
regular files inside it (files.py), each up to its size, JSON up to its depth, lists up to a
number of objects of each kind, all of it up to a total and a time. A file refused or cut is a
gap that names it and says why; a list not read whole is in `unread`, so an empty answer from
it proves nothing.
"""

from __future__ import annotations

import gc
import json
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from flannel_bot.errors import (
    BotError,
    BundleFileRefused,
    ExecutorError,
    NodeUnreachable,
    NotFound,
    UserError,
)
from flannel_bot.executors import selectors
from flannel_bot.executors.bundle.files import BundleFiles
from flannel_bot.executors.bundle.layout import (
    ERRORS,
    FLANNEL_NAMESPACES,
    LOST,
    LOST_NODES,
    PEER_FACTS,
    PEER_FACTS_VERSION,
    PROBES_DIR,
    RBAC,
    SAFE_NAME,
    UNREACHABLE,
    Json,
    field_value,
)
from flannel_bot.executors.bundle.limits import Budget, Limits, size
from flannel_bot.executors.bundle.listjson import Whole, decode_items, decode_whole, nesting
from flannel_bot.executors.kube import (
    parse_configmap,
    parse_daemonset,
    parse_event,
    parse_node,
    parse_pod,
    parse_service,
)
from flannel_bot.executors.kube.event_json import EventDecoder
from flannel_bot.executors.kube.pod_json import PodDecoder
from flannel_bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    RbacRule,
    ServiceInfo,
)
from flannel_bot.ports.nodes import CommandResult, ReducedResult
from flannel_bot.ports.probes import PROBES, Probe

_BY_ARGV: Mapping[tuple[str, ...], Probe] = {p.argv: p for p in PROBES}
# the tables a `peer-tables.json` may stand for
_BY_ID: Mapping[str, Probe] = {p.id: p for p in PROBES if p.id in ("ip-route", "ip-neigh", "fdb")}
_START = re.compile(
    r"^==== START logs for container (?P<container>\S+) "
    r"of pod (?P<ns>[^/\s]+)/(?P<pod>\S+) ====\n?",
    re.M,
)
_LOG_ERROR = re.compile(r"^(?:Create log request error|Request log error): (?P<why>.*)\n?\Z", re.S)
T = TypeVar("T")
# probe output a caching reader keeps, in characters (the rest is read again when asked)
PROBE_CACHE_CHARS = 256 << 20
ERRORS_SHOWN = 100  # lines of errors.txt that become gaps; the rest are counted
_NOT_OBJECTS = (list, str, int, float, type(None))  # the JSON values a list item must not be


class _Refused:
    """A file that is there but was not read (or not whole); its gap is already recorded."""


REFUSED = _Refused()


@dataclass(frozen=True)
class _LogFailed:
    """A block of logs.txt that holds kubectl's error line instead of a log."""

    why: str


class BundleReader:
    """`ClusterReader`, `FanOutExecutor` and `Recording` over a support bundle directory (see the
    package docstring for the layout).

    Reads lazily and caches; never raises for a missing, refused or corrupt file (it records a
    gap and answers empty), only where the live executor would too (NotFound for an absent
    object, NodeUnreachable for a node the bundle marks UNREACHABLE). Writes (`delete_pod`,
    `patch_configmap`) raise ExecutorError: a bundle is a record, not a cluster. `limits` bound
    what it reads (see `limits.Limits`); `clock` times it. `cache_probes=False`: node probe
    outputs are read each time they are asked for, not kept (a reader used once, by a caller
    that reduces each node's outputs as it goes, need not hold every node's text: the peer
    tables grow with the square of the cluster); a long-lived reader keeps them, up to
    `probe_cache_chars` of text (past that, as `diagnose --dump` of a 5,000-node bundle would
    hold gigabytes, the rest is read again when asked again, and counts again in the budget).
    """

    def __init__(
        self,
        path: Path | str,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_probes: bool = True,
        probe_cache_chars: int = PROBE_CACHE_CHARS,
    ) -> None:
        self.path = Path(path)
        self.cache_probes = cache_probes
        self.probe_cache_chars = probe_cache_chars
        if not self.path.is_dir():
            problem = "does not exist" if not self.path.exists() else "is not a directory"
            raise UserError(
                f"support bundle {self.path} {problem}: give the directory that `kubectl "
                f"cluster-info dump --output-directory DIR` wrote (see examples/dump/README.md)"
            )
        self.limits = limits or Limits()
        self._files = BundleFiles(self.path, Budget(self.limits, clock))
        self._lock = threading.RLock()
        self._gaps: dict[str, None] = {}  # ordered set
        self._over_budget: dict[str, list[str]] = {}  # why -> files refused for it, in order
        self._unread: set[tuple[str, str]] = set()
        self._namespace_dirs: list[str] | None = None
        self._texts: dict[str, str | _Refused | None] = {}
        self._probe_text_kept = 0  # characters of probe output in _texts
        self._lists: dict[str, list[Json] | None] = {}
        # pods.json files as PodInfo: the raw JSON of 150,000 pods is dropped once converted
        self._pods: dict[str, list[PodInfo]] = {}
        self._events: dict[str, list[EventInfo]] = {}  # events.json files as EventInfo
        self._nodes: list[NodeInfo] | None = None  # nodes.json as NodeInfo (frozen), read once
        self._why_unread: dict[str, str] = {}
        self._logs: dict[tuple[str, str], dict[str, str | _LogFailed] | _Refused | None] = {}
        self._missing_probes: set[tuple[str, str]] = set()
        self._read_errors_file()

    # -- Recording: what could not be concluded -------------------------------------------------

    @property
    def description(self) -> str:
        return f"bundle {self.path}"

    @property
    def gaps(self) -> list[str]:
        """What the bundle lacked for the calls made so far, one sentence each."""
        with self._lock:
            return list(self._gaps) + [
                f"{files[0]} was refused ({why}): what it holds was not checked"
                if len(files) == 1
                else f"{files[0]} and {len(files) - 1} later files were refused ({why}): what "
                f"they hold was not checked"
                for why, files in self._over_budget.items()
            ]

    @property
    def missing_probes(self) -> frozenset[tuple[str, str]]:
        """(node, probe id) pairs asked for and answered with exit 127 because not in the bundle."""
        with self._lock:
            return frozenset(self._missing_probes)

    @property
    def unread(self) -> frozenset[tuple[str, str]]:
        """(namespace, list) pairs asked for and not read whole: the directory or file absent,
        refused, corrupt, or the list cut at the object limit."""
        with self._lock:
            return frozenset(self._unread)

    def noted(
        self,
    ) -> tuple[
        list[str], dict[str, list[str]], frozenset[tuple[str, str]], frozenset[tuple[str, str]]
    ]:
        """What this reader has noted so far, for another reader of the same bundle to
        `absorb`: its gaps, the files refused by the budget (by why), probes absent, lists
        unread."""
        with self._lock:
            over = {why: list(files) for why, files in self._over_budget.items()}
            return list(self._gaps), over, frozenset(self._missing_probes), frozenset(self._unread)

    def absorb(
        self,
        gaps: Sequence[str],
        over_budget: Mapping[str, Sequence[str]],
        missing_probes: frozenset[tuple[str, str]],
        unread: frozenset[tuple[str, str]],
    ) -> None:
        """Take in what another reader of this bundle noted (`noted`), as if read here."""
        with self._lock:
            for text in gaps:
                self._gaps.setdefault(text, None)
            for why, files in over_budget.items():
                mine = self._over_budget.setdefault(why, [])
                known = set(mine)
                mine.extend(f for f in files if f not in known)
            self._missing_probes |= missing_probes
            self._unread |= unread

    @property
    def logs_read(self) -> bool:
        """Whether any pod's current log was read (and is kept) here."""
        with self._lock:
            return bool(self._logs)

    @property
    def budget(self) -> Budget:
        """What this reader has spent of its limits."""
        return self._files.budget

    def probed_nodes(self, most: int) -> list[str]:
        """Up to `most` directories under probes/ (the nodes the bundle probed), unchecked."""
        try:
            dirs, _, _ = self._files.subdirs(PROBES_DIR, most)
        except (BundleFileRefused, OSError):
            return []
        return dirs

    def _gap(self, text: str) -> None:
        with self._lock:
            self._gaps.setdefault(text, None)

    def _refusal(self, exc: BundleFileRefused, lost: str) -> None:
        """A refused file's gap: its own sentence, or one line for all refused by the budget."""
        with self._lock:
            if exc.budget:
                files = self._over_budget.setdefault(exc.why, [])
                if exc.rel not in files:
                    files.append(exc.rel)
            else:
                self._gap(f"{exc}: {lost}")

    def _read_errors_file(self) -> None:
        text = self._whole(
            ERRORS,
            self.limits.output_bytes,
            "errors.txt",
            "what the bundle's writer could not collect is unknown",
        )
        text = text if isinstance(text, str) else ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in lines[:ERRORS_SHOWN]:
            self._gap(f"when the bundle was written: {line}")
        if len(lines) > ERRORS_SHOWN:
            more = len(lines) - ERRORS_SHOWN
            self._gap(f"when the bundle was written: and {more} more lines in {ERRORS}")

    # -- files ----------------------------------------------------------------------------------

    def _whole(
        self, rel: str, limit: int, what: str, lost: str, keep: bool = True
    ) -> str | _Refused | None:
        """A small file's text (read once), None if absent, REFUSED if refused or unreadable
        (a gap saying `lost`); undecodable bytes are replaced, not fatal. `keep=False`: the
        text is not remembered (see `cache_probes`); a refusal is, so it is reported once."""
        with self._lock:
            if rel not in self._texts:
                try:
                    data = self._files.read(rel, limit, what)
                    text = None if data is None else _decode(data)
                    if not keep:
                        return text
                    if text is not None and rel.startswith(f"{PROBES_DIR}/"):
                        if self._probe_text_kept + len(text) > self.probe_cache_chars:
                            return text  # past the cap: read again when asked again
                        self._probe_text_kept += len(text)
                    self._texts[rel] = text
                except BundleFileRefused as exc:
                    self._refusal(exc, lost)
                    self._texts[rel] = REFUSED
                except OSError as exc:
                    self._gap(f"{rel} could not be read ({exc.strerror or exc}): {lost}")
                    self._texts[rel] = REFUSED
            return self._texts[rel]

    def _tail(self, rel: str, lost: str, keep: bool = False) -> str | _Refused | None:
        """A log's text, only its last `log_bytes` (from a line start) when it is larger;
        `keep`: read it once (a caller that keeps what it made of it need not)."""
        with self._lock:
            if rel not in self._texts:
                text = self._read_tail(rel, lost)
                if not keep:
                    return text
                self._texts[rel] = text
            return self._texts[rel]

    def _read_tail(self, rel: str, lost: str) -> str | _Refused | None:
        limit = self.limits.log_bytes
        with self._lock:
            try:
                tail = self._files.read_tail(rel, limit)
            except BundleFileRefused as exc:
                self._refusal(exc, lost)
                return REFUSED
            except OSError as exc:
                self._gap(f"{rel} could not be read ({exc.strerror or exc}): {lost}")
                return REFUSED
        if tail is None:
            return None
        text = _decode(tail.data)
        if tail.cut:
            first = text.find("\n")
            text = text[first + 1 :] if first >= 0 else ""  # the first line is cut mid-way
            self._gap(
                f"{rel} is {size(tail.size)}, over the {size(limit)} read from one log: only "
                f"its last {size(limit)} were read, so what was logged before (with the logs of "
                f"containers written before it) was not checked"
            )
        return text

    def _list_gap(self, rel: str, text: str) -> None:
        """A list file's gap, kept as why it was not read (a `_get` of it says the same)."""
        self._gap(text)
        self._why_unread[rel] = text

    def _is_dir(self, rel: str) -> bool | _Refused:
        with self._lock:
            try:
                return self._files.is_dir(rel)
            except BundleFileRefused as exc:
                self._refusal(exc, "nothing under it was checked")
            except OSError as exc:
                why = exc.strerror or exc
                self._gap(f"{rel} could not be read ({why}): nothing under it was checked")
            return REFUSED

    def _items(
        self, rel: str, lost: str, namespace: str | None = None, kind: str = ""
    ) -> list[Json]:
        """The items of a Kubernetes list file; [] and a gap when missing, refused or corrupt
        (and (namespace, kind) in `unread`, also when the list was cut)."""
        with self._lock:
            if rel not in self._lists:
                self._lists[rel] = self._load_items(rel, lost, namespace, (namespace or "", kind))
            items = self._lists[rel]
        if items is None:
            return []
        return items

    def _load_items(
        self,
        rel: str,
        lost: str,
        namespace: str | None,
        key: tuple[str, str],
        typed: Callable[[msgspec.Raw], object | None] | None = None,
        whole: Whole | None = None,
    ) -> list[Any] | None:
        """The items of a list file (`_items`); `typed` reads an item faster into its own type
        where it can, `whole` the whole list where it can (see `decode_items`): those items are
        kept as it made them, the others are the JSON objects."""
        self._unread.add(key)  # until it is read whole
        budget = self._files.budget
        try:
            with budget.timed(rel), _collection_paused():
                data = self._files.read(rel, self.limits.list_bytes, "list file")
                if data is None:
                    self._list_gap(rel, f"{rel} is missing: {lost}")
                    return None
                kind = key[1]
                left = budget.objects_left(kind)

                def tick() -> None:
                    budget.check_time(rel)

                # a whole list decoded typed builds nothing deeper than its Structs, and skips
                # the rest under msgspec's recursion check: the depth matters only to the items
                # built as JSON
                listed = None if whole is None else decode_whole(data, left, whole, tick)
                if listed is None:
                    depth = nesting(data)
                    if depth > self.limits.depth:
                        raise BundleFileRefused(
                            rel,
                            f"its JSON nests {depth:,} levels deep, over the {self.limits.depth} "
                            f"read (a Kubernetes list nests about 15)",
                        )
                    listed = decode_items(data, left, tick, typed=typed)
                if listed is not None and not listed.complete and left == 0:
                    raise BundleFileRefused(
                        rel,
                        f"the lists read before it hold the bundle's {self.limits.objects:,} "
                        f"{kind}",
                        budget=True,
                    )
        except BundleFileRefused as exc:
            self._refusal(exc, lost)
            self._why_unread[rel] = str(exc) if exc.budget else f"{exc}: {lost}"
            return None
        except OSError as exc:
            self._list_gap(rel, f"{rel} could not be read ({exc.strerror or exc}): {lost}")
            return None
        except ValueError as exc:
            self._list_gap(rel, f"{rel} is not valid JSON ({exc}): {lost}")
            return None
        if listed is None:
            self._list_gap(rel, f"{rel} is not a Kubernetes list (no `items`): {lost}")
            return None
        budget.take_objects(key[1], len(listed.items))
        if listed.complete:
            self._unread.discard(key)
        else:
            self._gap(
                f"{rel} was cut after its first {len(listed.items):,} items (the bundle's "
                f"limit is {self.limits.objects:,} {key[1]} in all): the rest were not checked"
            )
        items = [item for item in listed.items if not isinstance(item, _NOT_OBJECTS)]
        if len(items) != len(listed.items):
            skipped = len(listed.items) - len(items)
            self._gap(f"{rel}: {skipped} item(s) are not JSON objects and were skipped")
        if namespace is not None:  # hand-made files may leave the namespace to the directory
            for item in items:
                meta = item.get("metadata") if isinstance(item, dict) else None
                if isinstance(meta, dict) and not meta.get("namespace"):
                    meta["namespace"] = namespace
        return items

    def namespaces(self) -> list[str]:
        """The namespace directories in the bundle (links and special files are left out, and
        named in a gap)."""
        with self._lock:
            if self._namespace_dirs is None:
                self._namespace_dirs = self._list_namespaces()
            return list(self._namespace_dirs)

    def _list_namespaces(self) -> list[str]:
        entries = self.limits.entries
        try:
            dirs, odd, more = self._files.subdirs("", entries)
        except OSError as exc:
            why = exc.strerror or exc
            self._gap(f"the bundle could not be listed ({why}): no namespace was read")
            return []
        if more:
            self._gap(
                f"the bundle's directory holds more than {entries:,} entries: only the first "
                f"{entries:,} were looked at, so namespaces beyond them were not checked"
            )
        for name in sorted(odd):
            if SAFE_NAME.fullmatch(name) and "." not in name:  # a namespace's place
                self._is_dir(name)  # its refusal is the gap
        return sorted(d for d in dirs if d != PROBES_DIR and SAFE_NAME.fullmatch(d))

    def _namespaced(self, kind: str, namespace: str | None, what: str) -> list[Json]:
        """Items of `<ns>/<kind>.json` for one namespace, or of every namespace when None."""
        return self._each_namespace(kind, namespace, what, self._items)

    def _namespaced_pods(self, namespace: str | None) -> list[PodInfo]:
        """`_namespaced("pods", ...)` as PodInfo, each file converted once."""
        return self._each_namespace("pods", namespace, "pods", self._pod_items)

    def _pod_items(self, rel: str, lost: str, namespace: str | None, kind: str) -> list[PodInfo]:
        """A pods.json as PodInfo: each pod decoded straight into one where it has the usual
        shape (pod_json.py), the others read as JSON by `parse_pod`."""
        with self._lock:
            if rel not in self._pods:
                if rel in self._lists:
                    items: list[Any] | None = self._lists[rel]
                else:
                    key = (namespace or "", kind)
                    decoder = PodDecoder(namespace)
                    items = self._load_items(
                        rel, lost, namespace, key, decoder.decode, decoder.decode_list
                    )
                self._pods[rel] = [
                    p if isinstance(p, PodInfo) else parse_pod(p) for p in items or ()
                ]
                self._lists[rel] = None if items is None else []  # its JSON no longer held
            return self._pods[rel]

    def _event_items(
        self, rel: str, lost: str, namespace: str | None, kind: str
    ) -> list[EventInfo]:
        """An events.json as EventInfo, each file converted once: decoded whole straight into
        them where every event has the usual shape (event_json.py), else read as JSON by
        `parse_event`. A field selector reads the JSON (`list_events`), read anew if the file
        was read here first."""
        with self._lock:
            if rel not in self._events:
                if rel in self._lists:
                    items: list[Any] | None = self._lists[rel]
                else:
                    key = (namespace or "", kind)
                    whole = EventDecoder(namespace).decode_list
                    items = self._load_items(rel, lost, namespace, key, whole=whole)
                    if items is None or not all(isinstance(e, EventInfo) for e in items):
                        self._lists[rel] = items  # unread, or read as JSON: as `_items` keeps it
                self._events[rel] = [
                    e if isinstance(e, EventInfo) else parse_event(e) for e in items or ()
                ]
            return self._events[rel]

    def _each_namespace(
        self,
        kind: str,
        namespace: str | None,
        what: str,
        items: Callable[[str, str, str | None, str], list[T]],
    ) -> list[T]:
        if namespace is None:
            names = self.namespaces()
            for ns in FLANNEL_NAMESPACES:  # first: the object limit is spent on them first
                if ns in names:
                    items(f"{ns}/{kind}.json", LOST[kind](ns), ns, kind)
                else:
                    with self._lock:
                        self._unread.add((ns, kind))
            return [
                item
                for ns in names
                for item in items(f"{ns}/{kind}.json", LOST[kind](ns), ns, kind)
            ]
        if not SAFE_NAME.fullmatch(namespace):
            return []
        present = self._is_dir(namespace)
        if present is not True:
            with self._lock:
                self._unread.add((namespace, kind))
            if present is False:
                self._namespace_missing(namespace, what)
            return []
        return items(f"{namespace}/{kind}.json", LOST[kind](namespace), namespace, kind)

    def _namespace_missing(self, namespace: str, what: str) -> None:
        if namespace == "kube-flannel" and self._is_dir("kube-system") is True:
            return  # older manifests put flannel in kube-system; then kube-flannel need not exist
        self._gap(
            f"namespace {namespace} is not in the bundle (no {namespace}/ directory): its {what} "
            f"were not checked (dump it too: --namespaces ...,{namespace})"
        )

    # -- ClusterReader --------------------------------------------------------------------------

    def list_nodes(self, label_selector: str | None = None) -> list[NodeInfo]:
        if label_selector is None:  # asked by collect and by the probe workers' start: once
            with self._lock:
                if self._nodes is None:
                    items = self._items("nodes.json", LOST_NODES, kind="nodes")
                    self._nodes = [parse_node(n) for n in items]
                return list(self._nodes)
        items = self._items("nodes.json", LOST_NODES, kind="nodes")
        return [parse_node(n) for n in items if self._labels_match(label_selector, n)]

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]:
        pods = self._namespaced_pods(namespace)
        if label_selector:
            where = f"bundle {self.path}: "
            pods = [p for p in pods if selectors.labels_match(label_selector, p.labels, where)]
        if node:
            fields, where = f"spec.nodeName={node}", f"bundle {self.path}: "

            def on_node(pod: PodInfo) -> bool:
                return selectors.fields_match(fields, lambda key: pod.node, where)

            pods = [p for p in pods if on_node(p)]
        return list(pods)

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
        if not field_selector:
            events = self._each_namespace("events", namespace, "events", self._event_items)
        else:
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
        present = SAFE_NAME.fullmatch(namespace) is not None and self._is_dir(namespace)
        if present is not True:
            if present is False and (namespace in FLANNEL_NAMESPACES or kind == "services"):
                self._namespace_missing(namespace, what)
            raise NotFound(f"bundle {self.path}: namespace {namespace} is not in the bundle")
        for item in self._items(rel, LOST[kind](namespace), namespace, kind):
            if field_value(item, "metadata.name") == name:
                return item
        with self._lock:
            unread = self._lists.get(rel, []) is None
            why = self._why_unread.get(rel, f"{rel} was not read: {LOST[kind](namespace)}")
        if unread:
            raise NotFound(why)
        raise NotFound(f"bundle {self.path}: {kind} {namespace}/{name} is not in {rel}")

    def read_rbac(self) -> Rbac:
        """ClusterRoles and ClusterRoleBindings from rbac.json; `readable=False` without it."""
        with self._lock:
            if RBAC not in self._lists:
                self._lists[RBAC] = self._load_items(
                    RBAC,
                    "flannel's ClusterRole and ClusterRoleBinding were not checked",
                    None,
                    ("", "rbac"),
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
        if not (SAFE_NAME.fullmatch(namespace) and SAFE_NAME.fullmatch(pod)):
            raise NotFound(f"bundle {self.path}: no pod {namespace}/{pod}")
        blocks = self._log_blocks(namespace, pod)
        if container is None:
            container = self._default_container(namespace, pod, blocks)
        if not SAFE_NAME.fullmatch(container):
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
        blocks: dict[str, str | _LogFailed] | _Refused | None,
    ) -> str:
        rel = f"{namespace}/{pod}/logs.txt"
        if isinstance(blocks, _Refused):
            raise NotFound(f"{rel} was not read")
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
        lost = f"why container {container} of {namespace}/{pod} ended its last run is unknown"
        text = self._tail(rel, lost, keep=True)
        if isinstance(text, _Refused):
            raise NotFound(f"{rel} was not read")
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
        for p in self._namespaced_pods(namespace):
            if p.name == pod:
                for c in p.containers:
                    if c.name == container:
                        return c.restart_count
        return 0

    def _default_container(
        self, namespace: str, pod: str, blocks: dict[str, str | _LogFailed] | _Refused | None
    ) -> str:
        """The container the API picks when none is named: the pod's only (non-init) one."""
        spec = [
            c.name
            for p in self._namespaced_pods(namespace)
            if p.name == pod
            for c in p.containers
            if not c.init
        ]
        names = spec or ([] if isinstance(blocks, _Refused) else list(blocks or {}))
        if len(names) == 1:
            return names[0]
        raise ExecutorError(
            f"bundle {self.path}: a container name must be specified for pod {namespace}/{pod}, "
            f"choose one of: [{' '.join(names)}]"
        )

    def _log_blocks(
        self, namespace: str, pod: str
    ) -> dict[str, str | _LogFailed] | _Refused | None:
        key = (namespace, pod)
        with self._lock:
            if key not in self._logs:
                rel = f"{namespace}/{pod}/logs.txt"
                text = self._tail(rel, f"the current logs of {namespace}/{pod} are unknown")
                self._logs[key] = text if not isinstance(text, str) else self._split_logs(rel, text)
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
        self._check_reachable(node)
        return self._stored(node, tuple(argv))

    def _stored(self, node: str, argv: tuple[str, ...]) -> CommandResult:
        """`run` of a node whose reachability was checked."""
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
        return output

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> dict[str, list[CommandResult] | Exception]:
        """Like the SSH executor's fan-out; a node the bundle has no probes for is left out
        (it was not probed, which is a gap, not a failure of the node)."""
        return dict(self.run_each(commands, timeout))

    def run_each(
        self,
        commands: Mapping[str, Sequence[Sequence[str]]],
        timeout: float | None = None,
        facts: str | None = None,
    ) -> Iterator[tuple[str, list[CommandResult] | Exception]]:
        """`run_many` one node at a time: a node's files are read only when the caller takes
        it, so a caller that reduces each node's answers never holds every node's at once.

        `facts`: the digest of the wanted peer entries the caller reduces against. A node whose
        `peer-tables.json` was reduced against that same set, and whose tables are absent or
        still the size it records, answers those probes with `ReducedResult`s and its tables
        are not read at all (see `peer_facts`)."""
        for node, argvs in commands.items():
            if not self._has_probes(node):
                continue
            outcome: list[CommandResult] | Exception
            try:
                self._check_reachable(node)  # once for the node, not once per probe
                reduced = self.peer_facts(node, facts) if facts else {}
                outcome = [reduced.get(tuple(a)) or self._stored(node, tuple(a)) for a in argvs]
            except BotError as exc:
                outcome = exc
            yield node, outcome

    def peer_facts(self, node: str, digest: str) -> dict[tuple[str, ...], ReducedResult]:
        """The node's reduced peer tables from `probes/<node>/peer-tables.json`, by probe argv;
        empty when there is no such file, and when it was reduced against another wanted set or
        a table beside it is not the one it was reduced from (then the tables are read, and a
        gap says why the file was not used)."""
        where = self._node_dir(node)
        if where is None:
            return {}
        rel = f"{where}/{PEER_FACTS}"
        lost = "the node's peer tables were read instead"
        text = self._whole(rel, self.limits.output_bytes, "probe output", lost, keep=False)
        if not isinstance(text, str):
            return {}
        try:
            doc = json.loads(text)
        except ValueError as exc:
            self._gap(f"{rel} is not valid JSON ({exc}): {lost}")
            return {}
        why, found = self._facts_of(where, doc, digest)
        if why:
            self._gap(f"{rel} was not used ({why}): {lost}")
            return {}
        return found

    def _facts_of(
        self, where: str, doc: object, digest: str
    ) -> tuple[str, dict[tuple[str, ...], ReducedResult]]:
        """(why the document cannot be used, or "", its results by argv)."""
        if not isinstance(doc, dict) or doc.get("version") != PEER_FACTS_VERSION:
            return f"not a version {PEER_FACTS_VERSION} document", {}
        if doc.get("wanted") != digest:
            return "it was reduced against other Node annotations than nodes.json holds", {}
        tables = doc.get("tables")
        if not isinstance(tables, dict):
            return "it holds no tables", {}
        node = where.rsplit("/", 1)[1]
        found: dict[tuple[str, ...], ReducedResult] = {}
        for probe_id, table in tables.items():
            probe = _BY_ID.get(probe_id)
            if probe is None or not isinstance(table, dict):
                return f"{probe_id!r} is not one of its tables", {}
            numbers = [type(table.get(k)) is int for k in ("bytes", "exit", "entries")]
            texts = [isinstance(table.get(k), str) for k in ("stderr", "kept")]
            missing = table.get("missing")
            if not (all(numbers) and all(texts) and isinstance(missing, list)):
                return f"its {probe_id} table is not in the expected form", {}
            try:
                size = self._files.size(f"{where}/{probe.id}.txt")
            except (BundleFileRefused, OSError):  # read as a table, refused there
                return f"{probe.id}.txt is not a regular file", {}
            if size is not None and size != table["bytes"]:
                return f"{probe.id}.txt is not the table it was reduced from", {}
            found[probe.argv] = ReducedResult(
                node,
                probe.argv,
                table["exit"],
                table["kept"],
                table["stderr"],
                entries=table["entries"],
                missing=tuple(missing),
            )
        return "", found

    def _node_dir(self, node: str) -> str | None:
        return f"{PROBES_DIR}/{node}" if SAFE_NAME.fullmatch(node) else None

    def _has_probes(self, node: str) -> bool:
        present = self._is_dir(PROBES_DIR)
        if present is not True:
            if present is False:
                self._gap(
                    f"{PROBES_DIR}/ is missing: no node-side check (sysctls, subnet.env, CNI "
                    f"config, routes, iptables) was made; findings that need node probes were "
                    f"not checked"
                )
            return False
        where = self._node_dir(node)
        present = False if where is None else self._is_dir(where)
        if present is True:
            with self._lock:
                try:
                    present = self._files.has_entries(f"{where}")
                except (BundleFileRefused, OSError):  # is_dir has just read it
                    present = False
        if present is not True:
            if present is False:
                self._gap(
                    f"{PROBES_DIR}/{node}/ is missing: nothing on node {node} was checked (no "
                    f"probe outputs)"
                )
            return False
        return True

    def _check_reachable(self, node: str) -> None:
        where = self._node_dir(node)
        if where is None:
            return
        text = self._whole(
            f"{where}/{UNREACHABLE}",
            self.limits.note_bytes,
            "note",
            f"whether node {node} answered is unknown; its probe outputs were used",
        )
        if isinstance(text, str):
            why = text.strip() or f"node {node} did not answer when the bundle was written"
            raise NodeUnreachable(why, node=node)

    def _probe_output(self, node: str, probe: Probe) -> CommandResult | None:
        where = self._node_dir(node)
        if where is None:
            return None
        base = f"{where}/{probe.id}"
        lost = f"{probe.why} on {node} was not checked (probe {probe.id})"
        output = self.limits.output_bytes
        keep = self.cache_probes
        stdout = self._whole(f"{base}.txt", output, "probe output", lost, keep)
        if not isinstance(stdout, str):
            if stdout is None and self._is_dir(where) is True:
                self._gap(f"{base}.txt is missing: {lost}")
            return None
        # most probes have neither file: the listing read with the .txt says so without a call
        exit_text = stderr = None
        if not self._files.known_absent(f"{base}.exit"):
            exit_text = self._whole(f"{base}.exit", self.limits.note_bytes, "exit code", lost, keep)
        if not self._files.known_absent(f"{base}.err"):
            stderr = self._whole(f"{base}.err", output, "probe output", lost, keep)
        if isinstance(exit_text, _Refused) or isinstance(stderr, _Refused):
            return None
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
        return CommandResult(node, probe.argv, exit_code, stdout, stderr or "")

    # -- selectors ------------------------------------------------------------------------------

    def _labels_match(self, selector: str | None, obj: Json) -> bool:
        labels = _field_map(obj, "metadata.labels")
        return selectors.labels_match(selector, labels, where=f"bundle {self.path}: ")

    def _fields_match(self, selector: str | None, obj: Json) -> bool:
        return selectors.fields_match(
            selector, lambda key: field_value(obj, key), where=f"bundle {self.path}: "
        )


@contextmanager
def _collection_paused() -> Iterator[None]:
    """The cyclic garbage collector held off while one list file is decoded: the decode makes
    tens of thousands of objects and no cycles, and each full collection that their number
    would start walks every object of the process (0.5 s each at 150,000 pods, several per
    file). Reference counting frees garbage as before; a collection pending runs after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _tail(text: str, lines: int | None) -> str:
    if lines is None or lines < 0:
        return text
    kept = text.splitlines(keepends=True)
    return "".join(kept[len(kept) - lines :]) if lines else ""


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
                field_value(b, "roleRef.name"),
                tuple(
                    (str(s.get("namespace") or ""), str(s.get("name") or ""))
                    for s in (b.get("subjects") or [])
                    if isinstance(s, dict) and s.get("kind") == "ServiceAccount"
                ),
            )
            for b in bindings
        ),
    )
