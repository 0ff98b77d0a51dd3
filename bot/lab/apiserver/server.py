"""`ApiServer`: HTTP on a background thread plus the in-process API the lab controller uses.

It owns the parts (resource table, authorizer, store, handler), runs the hooks that stand in for
the controllers after each committed write, answers discovery, and writes kubeconfigs that point
at it.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import copy
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from flannel_bot.lab.apimachinery import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
)
from flannel_bot.lab.apiserver.authorization import Authorizer, PolicyRule, RequestAttributes
from flannel_bot.lab.apiserver.errors import StatusError
from flannel_bot.lab.apiserver.http import HttpServer, list_item, parse_bool, parse_int
from flannel_bot.lab.apiserver.resources import RESOURCES, Obj, Resource, ResourceTable
from flannel_bot.lab.apiserver.selectors import matcher, parse_selectors
from flannel_bot.lab.apiserver.store import Change, DeleteOptions, ObjectStore, sort_key
from flannel_bot.ports.clock import Clock, SystemClock

Hook = Callable[[str, Obj], None]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
VERSION_INFO = {  # what a v1.30.0 kube-apiserver answers on /version
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0",
    "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T17:27:03Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
PATCH_TYPE_NAMES = {"merge": MERGE_PATCH, "strategic": STRATEGIC_MERGE_PATCH, "json": JSON_PATCH}


class ApiServer:
    """The API server: HTTP on a background thread plus an in-process API for the lab controller.

    `rules` maps bearer tokens to RBAC-style rules; requests with any other token, or none, are
    allowed everything. `users` maps tokens to the user name shown in Forbidden messages.
    Hooks run after a write is committed, outside the store lock, in the writing thread (so an
    HTTP DELETE answers only after an `on_delete` hook has created the replacement pod).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rules: Mapping[str, Sequence[PolicyRule | Mapping[str, Any]]] | None = None,
        users: Mapping[str, str] | None = None,
        namespaces: Sequence[str] = DEFAULT_NAMESPACES,
        resources: Iterable[Resource] = RESOURCES,
        clock: Clock | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.resources = ResourceTable(resources)
        self.authorizer = Authorizer(rules, users)
        self._store = ObjectStore(self.resources, clock or SystemClock())
        self._on_change: list[Hook] = []
        self._on_delete: list[Hook] = []
        self._faults: list[list[Any]] = []
        self._fault_lock = threading.Lock()
        self._httpd: HttpServer | None = None
        self._thread: threading.Thread | None = None
        for ns in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # lifecycle

    def start(self) -> ApiServer:
        if self._httpd is not None:
            raise RuntimeError("the lab API server is already running")
        self._httpd = HttpServer((self.host, self.port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"lab-apiserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: ends open watches and keep-alive connections, then closes the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()
        with self._store.cond:
            self._store.cond.notify_all()
        # shutdown() waits for the accept loop's next wake-up; a connection wakes it at once
        closer = threading.Thread(target=httpd.shutdown, daemon=True)
        closer.start()
        while closer.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.5).close()
            closer.join(0.01)
        with httpd.connections_lock:
            for conn in list(httpd.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the lab API server is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def resource_version(self) -> int:
        return self._store.rv

    def write_kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        context: str = "flannel-lab",
        namespace: str | None = None,
    ) -> Path:
        return write_kubeconfig(path, self.url, token=token, context=context, namespace=namespace)

    # faults

    def fail(
        self, path_prefix: str, code: int, times: int = 1, retry_after: int | None = None
    ) -> None:
        """The next `times` requests under `path_prefix` answer `code` (a 500, a 429 with
        Retry-After) before reaching the store: a sick or throttling API server."""
        with self._fault_lock:
            self._faults.append([path_prefix, code, times, retry_after])

    def take_fault(self, method: str, path: str) -> tuple[int, int | None] | None:
        with self._fault_lock:
            for fault in self._faults:
                if path.startswith(fault[0]) and fault[2] > 0:
                    fault[2] -= 1
                    return fault[1], fault[3]
        return None

    # hooks

    def on_change(self, callback: Hook) -> Hook:
        """Call `callback(verb, obj)` after every committed write; usable as a decorator."""
        self._on_change.append(callback)
        return callback

    def on_delete(self, callback: Hook) -> Hook:
        """Call `callback("delete", obj)` after an object is removed; usable as a decorator."""
        self._on_delete.append(callback)
        return callback

    def _fire(self, changes: Iterable[Change]) -> None:
        for change in changes:
            for hook in list(self._on_change):
                hook(change.verb, copy.deepcopy(change.obj))
            if change.verb == "delete":
                for hook in list(self._on_delete):
                    hook(change.verb, copy.deepcopy(change.obj))

    # in-process API (trusted: no authorization)

    def create(self, obj: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Create `obj` (apiVersion and kind pick the resource); status is kept as given."""
        res = self.resources.of(obj)
        ns = self._namespace(res, namespace or (obj.get("metadata") or {}).get("namespace"))
        created, changes = self._store.create(res, ns, obj, trusted=True)
        self._fire(changes)
        return copy.deepcopy(created)

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        res = self.resources.find(resource)
        return copy.deepcopy(self._store.get(res, self._namespace(res, namespace), name))

    def replace(self, obj: Mapping[str, Any], subresource: str | None = None) -> Obj:
        """PUT semantics: a stale metadata.resourceVersion raises a 409 `StatusError`."""
        res = self.resources.of(obj)
        meta = obj.get("metadata") or {}
        ns = self._namespace(res, meta.get("namespace"))
        new = self.apply_update(res, ns, str(meta.get("name", "")), obj, subresource, False)
        return copy.deepcopy(new)

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "strategic",
        subresource: str | None = None,
    ) -> Obj:
        """`patch_type` is merge, strategic or json (or the full media type)."""
        res = self.resources.find(resource)
        media = PATCH_TYPE_NAMES.get(patch_type, patch_type)
        ns = self._namespace(res, namespace)
        return copy.deepcopy(self.apply_patch(res, ns, name, media, patch, subresource, False))

    def delete(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        """Delete now (or mark for deletion when finalizers remain); returns the object."""
        res = self.resources.find(resource)
        obj, _ = self.apply_delete(res, self._namespace(res, namespace), name, DeleteOptions())
        return obj

    def set_log(
        self, namespace: str, pod: str, container: str, text: str, previous: bool = False
    ) -> None:
        """What `pods/log` returns for this container (`previous`: the last terminated one)."""
        self._store.set_log(namespace, pod, container, text, previous)

    def _namespace(self, res: Resource, namespace: str | None) -> str | None:
        if not res.namespaced:
            return None
        if not namespace:
            raise ValueError(f"{res.qualified} are namespaced: pass namespace=")
        return namespace

    # shared by HTTP and in-process calls; they return stored dicts, which must not be mutated

    def apply_create(
        self, res: Resource, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        created, changes = self._store.create(res, namespace, body, dry_run=dry_run)
        self._fire(changes)
        return created

    def apply_update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None,
        dry_run: bool,
    ) -> Obj:
        if not isinstance(body, dict):
            raise StatusError.bad_request("the body of an update must be a JSON object")
        new, changes = self._store.update(
            res,
            namespace,
            name,
            lambda _old: copy.deepcopy(body),
            verb="update",
            subresource=subresource,
            dry_run=dry_run,
        )
        self._fire(changes)
        return new

    def apply_patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        media_type: str,
        patch: Any,
        subresource: str | None,
        dry_run: bool,
    ) -> Obj:
        def compute(old: Obj) -> Any:
            try:
                return apply_patch(media_type, old, patch)
            except PatchError as exc:
                reasons = {400: "BadRequest", 415: "UnsupportedMediaType", 422: "Invalid"}
                raise StatusError(exc.code, reasons.get(exc.code, "Invalid"), str(exc)) from None

        new, changes = self._store.update(
            res, namespace, name, compute, verb="patch", subresource=subresource, dry_run=dry_run
        )
        self._fire(changes)
        return new

    def apply_delete(
        self, res: Resource, namespace: str | None, name: str, options: DeleteOptions
    ) -> tuple[Obj, bool]:
        obj, removed, changes = self._store.delete(res, namespace, name, options)
        self._fire(changes)
        return copy.deepcopy(obj), removed

    def delete_matching(
        self, res: Resource, namespace: str | None, match: Callable[[Obj], bool]
    ) -> builtins.list[Obj]:
        items, _ = self._store.select(res, namespace, match)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                obj, _ = self.apply_delete(
                    res, meta.get("namespace"), meta["name"], DeleteOptions()
                )
            except StatusError as exc:
                if exc.code != 404:  # deleted meanwhile by someone else: fine
                    raise
                continue
            deleted.append(obj)
        return deleted

    def list_response(
        self,
        res: Resource,
        namespace: str | None,
        match: Callable[[Obj], bool],
        query: Mapping[str, str],
    ) -> Obj:
        items, rv = self._store.select(res, namespace, match)
        meta: Obj = {"resourceVersion": str(rv)}
        token = query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
            except (ValueError, KeyError, TypeError):
                raise StatusError.bad_request(
                    f"continue key is not valid: incorrect encoded start resourceVersion (version "
                    f"meta.k8s.io/v1): {token}"
                ) from None
            items = [o for o in items if sort_key(o) >= start]
        limit = parse_int(query.get("limit"), "limit")
        if limit is not None and limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            next_start = sort_key(items[-1]) + "\x00"
            next_token = {"v": "meta.k8s.io/v1", "rv": rv, "start": next_start}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(next_token).encode()).decode()
            meta["remainingItemCount"] = rest
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": [list_item(o) for o in items],
        }

    def pod_log(self, namespace: str, name: str, query: Mapping[str, str]) -> str:
        pods = self.resources.find("pods")
        pod = self._store.get(pods, namespace, name)
        spec = pod.get("spec") or {}
        names = {
            field_name: [str(c.get("name")) for c in spec.get(field_name) or []]
            for field_name in ("containers", "initContainers", "ephemeralContainers")
        }
        container = query.get("container")
        if not container:
            if len(names["containers"]) == 1:
                container = names["containers"][0]
            else:
                message = (
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names['containers'])}]"
                )
                if names["initContainers"]:
                    message += (
                        f" or one of the init containers: [{' '.join(names['initContainers'])}]"
                    )
                if names["ephemeralContainers"]:
                    message += (
                        " or one of the ephemeral containers: "
                        f"[{' '.join(names['ephemeralContainers'])}]"
                    )
                raise StatusError.bad_request(message)
        elif not any(container in group for group in names.values()):
            raise StatusError.bad_request(f"container {container} is not valid for pod {name}")
        previous = parse_bool(query.get("previous"), "previous")
        text = self._store.log(namespace, name, container, previous)
        if text is None:
            if previous:
                raise StatusError.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            waiting = _waiting_reason(pod, container)
            if waiting is not None:  # the kubelet's answer for a container with no log yet
                raise StatusError.bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: {waiting}'
                )
            text = ""
        tail = parse_int(query.get("tailLines"), "tailLines")
        if tail is not None and tail >= 0:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - tail :]) if tail else ""
        limit = parse_int(query.get("limitBytes"), "limitBytes")
        if limit is not None and limit > 0:
            text = text.encode()[:limit].decode(errors="ignore")
        return text

    def review(self, token: str | None, body: Obj) -> Obj:
        """Answer a SelfSubjectAccessReview from the same rules that guard requests."""
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        path_attrs = spec.get("nonResourceAttributes")
        if bool(attrs) == bool(path_attrs):
            res = self.resources.find("selfsubjectaccessreviews")
            raise StatusError.invalid(
                res,
                "",
                [
                    (
                        "spec.resourceAttributes",
                        "FieldValueInvalid",
                        "Invalid value: exactly one of nonResourceAttributes or "
                        "resourceAttributes must be specified",
                    )
                ],
            )
        if attrs:
            allowed, reason = self.authorizer.decide(
                token,
                RequestAttributes(
                    verb=str(attrs.get("verb", "")),
                    group=str(attrs.get("group", "")),
                    resource=str(attrs.get("resource", "")),
                    subresource=str(attrs.get("subresource", "")),
                    namespace=attrs.get("namespace") or None,
                    name=attrs.get("name") or None,
                ),
            )
        else:
            assert isinstance(path_attrs, dict)
            allowed, reason = self.authorizer.decide_path(
                token, str(path_attrs.get("verb", "")), str(path_attrs.get("path", ""))
            )
        status: Obj = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    def discovery(self, segments: Sequence[str]) -> Obj:
        """`/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}` and `/apis/{group}/{version}`."""
        gvs = self.resources.group_versions()
        if list(segments) == ["version"]:
            return dict(VERSION_INFO)
        if list(segments) == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": sorted({v for g, v in gvs if not g}),
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        groups: dict[str, list[str]] = {}
        for g, v in gvs:
            if g:
                groups.setdefault(g, []).append(v)
        if list(segments) == ["apis"]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [_api_group(g, vs) for g, vs in groups.items()],
            }
        if len(segments) == 2 and segments[0] == "apis" and segments[1] in groups:
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                **_api_group(segments[1], groups[segments[1]]),
            }
        if list(segments) == ["api", "v1"]:
            return self._resource_list("", "v1")
        if len(segments) == 3 and segments[0] == "apis" and (segments[1], segments[2]) in gvs:
            return self._resource_list(segments[1], segments[2])
        raise StatusError.no_route()

    def _resource_list(self, group: str, version: str) -> Obj:
        entries: builtins.list[Obj] = []
        for res in self.resources.all:
            if (res.group, res.version) != (group, version):
                continue
            entry: Obj = {
                "name": res.plural,
                "singularName": res.singular,
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": list(res.verbs),
            }
            if res.short_names:
                entry["shortNames"] = list(res.short_names)
            if res.categories:
                entry["categories"] = list(res.categories)
            entries.append(entry)
            for sub in res.subresources:
                entries.append(
                    {
                        "name": f"{res.plural}/{sub}",
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "kind": res.kind,
                        "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }

    # `list` comes last: inside the class body it shadows the builtin used in annotations above.
    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> builtins.list[Obj]:
        """Objects of `resource` (all namespaces when `namespace` is None), selectors applied."""
        res = self.resources.find(resource)
        labels, fields = parse_selectors(
            res, {"labelSelector": label_selector, "fieldSelector": field_selector}
        )
        ns = namespace if res.namespaced else None
        items, _ = self._store.select(res, ns, matcher(res, ns, labels, fields))
        return copy.deepcopy(items)


def _waiting_reason(pod: Obj, container: str) -> str | None:
    """Why `container` of a pod bound to a node has not started (None: it has, or the pod is
    not bound to a node yet, when the real server answers an empty log)."""
    if not (pod.get("spec") or {}).get("nodeName"):
        return None
    status = pod.get("status") or {}
    statuses = [
        s
        for field_name in ("containerStatuses", "initContainerStatuses")
        for s in status.get(field_name) or []
    ]
    mine = next((s for s in statuses if s.get("name") == container), None)
    if mine is None:
        return "ContainerCreating" if status.get("phase", "Pending") == "Pending" else None
    state = mine.get("state") or {}
    if "running" in state or "terminated" in state:
        return None
    reason = str((state.get("waiting") or {}).get("reason") or "ContainerCreating")
    pulls = {"ErrImagePull": "image can't be pulled"}
    pulls["ImagePullBackOff"] = "trying and failing to pull image"
    return pulls.get(reason, reason)


def _api_group(group: str, versions: Sequence[str]) -> Obj:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def write_kubeconfig(
    path: Path,
    server: str,
    *,
    token: str | None = None,
    context: str = "flannel-lab",
    namespace: str | None = None,
) -> Path:
    """A kubeconfig (JSON is valid YAML) for `kubernetes.config.load_kube_config` and kubectl.

    Written with mode 0600 from the start, because it may hold a bearer token.
    """
    ctx: Obj = {"cluster": context, "user": context}
    if namespace:
        ctx["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": token} if token else {}}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
        "preferences": {},
    }
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    path.chmod(0o600)
    return path
