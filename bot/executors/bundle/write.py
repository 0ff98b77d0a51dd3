"""Writes a support bundle from a live cluster (`flannel-bot collect DIR`), in the layout the
reader reads (see the package docstring), so reading it back gives the evidence a live `collect`
gives.

What could not be read is written to errors.txt, one line each, and the rest is still written:
a bundle with holes still explains what it can. Lists are kept as the API returns them
(`KubeClient.list_raw`), not as our records, so people can read them with kubectl's eyes; but a
bundle travels (tickets, other teams), so every file is written through `_Writer`, which masks
secrets first (`bot.redaction`: a ConfigMap's kubeconfig token, an env var's password, a private
key in a probe's stderr) while the JSON stays what kubectl would read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flannel_bot.errors import ExecutorError, NotFound, UserError
from flannel_bot.executors.bundle.layout import (
    BASE_NAMESPACES,
    ERRORS,
    FLANNEL_NAMESPACES,
    LOG_LINES,
    NAMESPACED_LISTS,
    PEER_FACTS,
    PROBES_DIR,
    RBAC,
    READ_LISTS,
    SAFE_NAME,
    UNREACHABLE,
    Json,
    field_value,
)
from flannel_bot.executors.kube import parse_node, parse_pod
from flannel_bot.ports.nodes import FanOutExecutor
from flannel_bot.ports.probes import PROBES
from flannel_bot.redaction import redact, scrub

if TYPE_CHECKING:  # imported by whoever writes a bundle; a reader of one needs no client
    from flannel_bot.executors.kube import KubeClient


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: list[str] = []

    def json(self, rel: str, obj: Any) -> None:
        self._write(rel, json.dumps(scrub(obj), indent=4, ensure_ascii=False) + "\n")

    def text(self, rel: str, text: str) -> None:
        self._write(rel, redact(text))

    def _write(self, rel: str, text: str) -> None:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))

    def safe(self, what: str, name: str) -> bool:
        if SAFE_NAME.fullmatch(name):
            return True
        self.errors.append(f"skipped {what} {name!r}: not usable as a file name")
        return False


def _items_of(obj: Json) -> list[Json]:
    items = obj.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _namespace_of(item: Json) -> str:
    return field_value(item, "metadata.namespace")


def write_bundle(
    kube: KubeClient,
    nodes: FanOutExecutor | None,
    path: Path | str,
    only: Sequence[str] = (),
    timeout: float = 30.0,
    *,
    log_lines: int | None = LOG_LINES,
) -> Path:
    """Write a support bundle of the live cluster into `path` (a new or empty directory).

    Lists are kept as the API returns them; what could not be read is written to errors.txt and
    the rest is still written. The probe set (`bot.ports.probes.PROBES`) runs on every node (or
    `only`) at once within `timeout`, through `nodes.run_many`; a node that does not answer gets
    an UNREACHABLE file saying why. `nodes` None writes no `probes/`.
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


def write_peer_facts(root: Path | str, node: str, document: Json) -> None:
    """Write one node's reduced peer tables (`peer_tables.facts_document`) beside its probe
    outputs, masked as every file of a bundle is."""
    if not SAFE_NAME.fullmatch(node):
        raise UserError(f"{node!r} is not usable as a file name")
    _Writer(Path(root)).json(f"{PROBES_DIR}/{node}/{PEER_FACTS}", document)


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
        # redacted alone: a key cut off in one container's log must not swallow the next block
        blocks.append(f"==== START logs for {header}\n{redact(body)}==== END logs for {header}\n")
        if c.restart_count > 0:
            try:
                previous = kube.read_pod_log(ns, pod.name, c.name, True, log_lines)
            except ExecutorError as exc:
                out.errors.append(f"no previous log of {c.name} in {ns}/{pod.name}: {exc}")
            else:
                out.text(f"{ns}/{pod.name}/logs-{c.name}-previous.txt", previous)
    out.text(f"{ns}/{pod.name}/logs.txt", "".join(blocks))


def _write_probes(
    out: _Writer, nodes: FanOutExecutor, names: Sequence[str], timeout: float
) -> None:
    commands = {node: [list(p.argv) for p in PROBES] for node in names if out.safe("node", node)}
    for node, outcome in nodes.run_many(commands, timeout).items():
        if isinstance(outcome, Exception):
            out.text(f"{PROBES_DIR}/{node}/{UNREACHABLE}", f"{outcome}\n")
            continue
        for probe, result in zip(PROBES, outcome, strict=False):
            base = f"{PROBES_DIR}/{node}/{probe.id}"
            out.text(f"{base}.txt", result.stdout)
            if result.stderr:
                out.text(f"{base}.err", result.stderr)
            if result.exit_code != 0:
                out.text(f"{base}.exit", f"{result.exit_code}\n")
