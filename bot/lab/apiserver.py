"""A stateful Kubernetes API server stand-in, served over real HTTP on localhost.

No kube-apiserver can be installed on the project's machines, and the emulators on PyPI ignore
selectors, watch timeouts and `pods/log`, which would hide exactly the bugs the Kubernetes
executor can have. This one keeps the semantics the bot depends on: one global resourceVersion
with optimistic concurrency, the three PATCH types, label and field selectors (and 400 for the
ones a real server rejects), watches with resume and timeouts, `pods/log`, discovery that kubectl
accepts, `Status` errors worded like the real server's, and RBAC-style rules per bearer token.
`flannel-bot lab up` runs it in place of the cluster, and the executor's integration tests drive
it with the official client.

In-process writes (`ApiServer.create` and friends) go through the same store as HTTP ones, so
watches and hooks see them; only `create` is trusted to keep the status and creationTimestamp it
is given, because the lab plays the kubelet and the controllers.

Left out on purpose: admission (no ServiceAccount or LimitRange defaulting), the garbage collector
and the DaemonSet/Deployment controllers (register hooks instead), server-side apply, protobuf and
Table output, watch bookmarks, and consistent snapshots for paginated lists (a `continue` token
resumes after the last key against the current state).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import copy
import json
import logging
import os
import secrets
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bot.errors import BotError
from bot.lab.apimachinery import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    FieldSelector,
    LabelSelector,
    PatchError,
    SelectorError,
    apply_patch,
    field_value,
    is_dns1123_label,
    name_problem,
)
from bot.ports.clock import Clock, SystemClock

Obj = dict[str, Any]
Hook = Callable[[str, Obj], None]

_log = logging.getLogger(__name__)

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
WATCH_TIMEOUT_DEFAULT = 1800.0  # the real server's --min-request-timeout
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


# --- resources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One REST resource. Serving another one is one more entry in `RESOURCES`."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()  # beyond metadata.name / metadata.namespace
    required: tuple[str, ...] = ()  # dotted paths that validation insists on
    name_format: str = "subdomain"  # or "label" (DNS-1123 label) or "path" (RBAC names)
    returns_object: bool = False  # DELETE answers with the object, not a Status
    generation: bool = False  # metadata.generation counts spec changes
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the real server names the resource in messages: `pods`, `daemonsets.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def details(self, name: str | None = None, **extra: Any) -> Obj:
        out: Obj = {}
        if name:
            out["name"] = name
        if self.group:
            out["group"] = self.group
        out["kind"] = self.plural
        out.update(extra)
        return out


_CORE, _APPS, _RBAC = "", "apps", "rbac.authorization.k8s.io"
_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_WORKLOAD = ("spec.selector", "spec.template", "spec.template.spec.containers")

# fmt: off
RESOURCES: tuple[Resource, ...] = (
    Resource(_CORE, "v1", "namespaces", "Namespace", False, ("ns",), ("status",), ("status.phase",), name_format="label", returns_object=True),  # noqa: E501
    Resource(_CORE, "v1", "nodes", "Node", False, ("no",), ("status",), ("spec.unschedulable",)),
    Resource(_CORE, "v1", "pods", "Pod", True, ("po",), ("status", "log"), _POD_FIELDS, ("spec.containers",), returns_object=True, categories=("all",)),  # noqa: E501
    Resource(_CORE, "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource(_CORE, "v1", "secrets", "Secret", True, field_labels=("type",)),
    Resource(_CORE, "v1", "services", "Service", True, ("svc",), ("status",), name_format="label", returns_object=True, categories=("all",)),  # noqa: E501
    Resource(_CORE, "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource(_CORE, "v1", "events", "Event", True, ("ev",), (), _EVENT_FIELDS, ("involvedObject",)),
    Resource(_CORE, "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), returns_object=True),
    Resource(_APPS, "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), (), _WORKLOAD, generation=True, categories=("all",)),  # noqa: E501
    Resource(_APPS, "v1", "deployments", "Deployment", True, ("deploy",), ("status",), (), _WORKLOAD, generation=True, categories=("all",)),  # noqa: E501
    Resource(_RBAC, "v1", "clusterroles", "ClusterRole", False, name_format="path"),
    Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False, required=("roleRef",), name_format="path"),  # noqa: E501
    Resource(_RBAC, "v1", "roles", "Role", True, name_format="path"),
    Resource(_RBAC, "v1", "rolebindings", "RoleBinding", True, required=("roleRef",), name_format="path"),  # noqa: E501
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, verbs=("create",)),  # noqa: E501
)
# fmt: on

_FIELD_PATHS = {("events", "source"): "source.component"}
_BOOL_FIELDS = frozenset(["spec.hostNetwork", "spec.unschedulable"])


class ResourceTable:
    """Look-ups over `RESOURCES`: by URL, by apiVersion/kind, and by the names kubectl accepts."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.all = tuple(resources)
        self._by_path = {(r.group, r.version, r.plural): r for r in self.all}
        self._by_kind = {(r.api_version, r.kind): r for r in self.all}
        self._by_name: dict[str, Resource] = {}
        for r in self.all:
            for name in (r.plural, r.singular, *r.short_names):
                self._by_name.setdefault(name.lower(), r)
                self._by_name.setdefault(f"{name}.{r.group}".lower(), r)
            self._by_name.setdefault(r.kind.lower(), r)

    def at(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def find(self, name: str) -> Resource:
        """A resource by plural, singular, short name or kind, optionally `.group`-qualified."""
        found = self._by_name.get(name.lower())
        if found is None:
            raise ApiError(404, "NotFound", f'the server doesn\'t have a resource type "{name}"')
        return found

    def of(self, obj: Mapping[str, Any]) -> Resource:
        found = self._by_kind.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
        if found is None:
            raise ApiError(
                400,
                "BadRequest",
                f'no matches for kind "{obj.get("kind")}" in version "{obj.get("apiVersion")}"',
            )
        return found

    def group_versions(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((r.group, r.version) for r in self.all))


# --- errors ------------------------------------------------------------------------------------


class ApiError(BotError):
    """A failure the real server would answer with this `Status`; `status` is the body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = dict(details)

    @classmethod
    def not_found(cls, res: Resource, name: str) -> ApiError:
        return cls(404, "NotFound", f'{res.qualified} "{name}" not found', res.details(name))

    @classmethod
    def already_exists(cls, res: Resource, name: str) -> ApiError:
        return cls(
            409, "AlreadyExists", f'{res.qualified} "{name}" already exists', res.details(name)
        )

    @classmethod
    def conflict(cls, res: Resource, name: str, why: str | None = None) -> ApiError:
        why = why or (
            "the object has been modified; please apply your changes to the latest version and "
            "try again"
        )
        message = f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}'
        return cls(409, "Conflict", message, res.details(name))

    @classmethod
    def invalid(cls, res: Resource, name: str, causes: Sequence[tuple[str, str, str]]) -> ApiError:
        """`causes` are (field, reason, text), e.g. ("spec.x", "FieldValueRequired", ...)."""
        texts = [f"{f}: {text}" for f, _, text in causes]
        joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        kind = f"{res.kind}.{res.group}" if res.group else res.kind
        details: Obj = {"name": name} if name else {}
        if res.group:
            details["group"] = res.group
        details["kind"] = res.kind
        details["causes"] = [{"reason": r, "message": text, "field": f} for f, r, text in causes]
        return cls(422, "Invalid", f'{kind} "{name}" is invalid: {joined}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def no_route(cls) -> ApiError:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            {},
        )


# --- authorization -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRule:
    """An RBAC PolicyRule: `resources` may name subresources (`pods/log`, `pods/*`, `*/status`)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    namespace: str | None = None  # a Role's rule: only in its namespace; None: cluster-wide

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any], namespace: str | None = None) -> PolicyRule:
        """From the JSON shape of a ClusterRole rule (`apiGroups`, `resourceNames`, ...), or of
        a Role's rule in `namespace`."""
        return cls(
            verbs=tuple(rule.get("verbs", ())),
            api_groups=tuple(rule.get("apiGroups", ())),
            resources=tuple(rule.get("resources", ())),
            resource_names=tuple(rule.get("resourceNames", ())),
            non_resource_urls=tuple(rule.get("nonResourceURLs", ())),
            namespace=namespace,
        )

    def allows(self, attrs: RequestAttributes) -> bool:
        if self.namespace is not None and attrs.namespace != self.namespace:
            return False
        if not ("*" in self.verbs or attrs.verb in self.verbs):
            return False
        if not ("*" in self.api_groups or attrs.group in self.api_groups):
            return False
        if not any(_resource_matches(r, attrs.resource, attrs.subresource) for r in self.resources):
            return False
        return not self.resource_names or attrs.name in self.resource_names

    def allows_path(self, verb: str, path: str) -> bool:
        if not ("*" in self.verbs or verb in self.verbs):
            return False
        return any(
            url == path or url == "*" or (url.endswith("*") and path.startswith(url[:-1]))
            for url in self.non_resource_urls
        )


def _resource_matches(rule: str, resource: str, subresource: str) -> bool:
    if rule == "*":
        return True
    if not subresource:
        return rule == resource
    return rule in (f"{resource}/{subresource}", f"{resource}/*", f"*/{subresource}")


@dataclass(frozen=True)
class RequestAttributes:
    """What RBAC decides on; `namespace` None means cluster scope."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None

    def forbidden(self, user: str) -> ApiError:
        res_text = f"{self.resource}.{self.group}" if self.group else self.resource
        subject = f'{res_text} "{self.name}"' if self.name else res_text
        full = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        scope = (
            f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        )
        message = (
            f'{subject} is forbidden: User "{user}" cannot {self.verb} resource "{full}" '
            f'in API group "{self.group}"{scope}'
        )
        details: Obj = {"name": self.name} if self.name else {}
        if self.group:
            details["group"] = self.group
        details["kind"] = self.resource
        return ApiError(403, "Forbidden", message, details)


_DISCOVERY_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz")


class Authorizer:
    """Bearer token -> rules. Other tokens, and requests without one, may do anything."""

    def __init__(
        self,
        rules: Mapping[str, Sequence[PolicyRule | Mapping[str, Any]]] | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self._rules = {
            token: tuple(r if isinstance(r, PolicyRule) else PolicyRule.from_dict(r) for r in rs)
            for token, rs in (rules or {}).items()
        }
        self._users = dict(users or {})
        self.decisions: list[tuple[str, RequestAttributes, int | None]] = []
        self._lock = threading.Lock()

    def grant(self, token: str, rules: Sequence[PolicyRule], user: str) -> None:
        """Restrict `token` to `rules` from now on; its decisions are recorded in `decisions`
        as (token, request, index of the rule that allowed it or None)."""
        with self._lock:
            self._rules[token] = tuple(rules)
            self._users[token] = user

    def user(self, token: str | None) -> str:
        if token is None:
            return "system:admin"
        return self._users.get(token, "lab-user")

    def decide(self, token: str | None, attrs: RequestAttributes) -> tuple[bool, str]:
        """(allowed, reason), the reason worded like the one a SelfSubjectAccessReview shows."""
        rules = self._rules.get(token) if token is not None else None
        if rules is None:
            return True, "unrestricted token"
        assert token is not None
        for index, rule in enumerate(rules):
            if rule.allows(attrs):
                with self._lock:
                    self.decisions.append((token, attrs, index))
                return True, f"allowed by lab policy rule #{index}"
        with self._lock:
            self.decisions.append((token, attrs, None))
        return False, ""

    def decide_path(self, token: str | None, verb: str, path: str) -> tuple[bool, str]:
        rules = self._rules.get(token) if token is not None else None
        if rules is None:
            return True, "unrestricted token"
        if any(
            path == p or (p.endswith("*") and path.startswith(p[:-1])) for p in _DISCOVERY_PATHS
        ):
            return True, "discovery is open to every user"
        for index, rule in enumerate(rules):
            if rule.allows_path(verb, path):
                return True, f"allowed by lab policy rule #{index}"
        return False, ""

    def check(self, token: str | None, attrs: RequestAttributes) -> None:
        allowed, _ = self.decide(token, attrs)
        if not allowed:
            raise attrs.forbidden(self.user(token))


# --- the store ---------------------------------------------------------------------------------

Key = tuple[str, str, str, str | None, str]  # group, version, plural, namespace, name


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: Resource
    obj: Obj
    prev: Obj | None = None


@dataclass(frozen=True)
class Change:
    """A committed write, handed to hooks once the store lock is released."""

    verb: str  # create, update, patch, delete
    obj: Obj


@dataclass
class DeleteOptions:
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False


def _key(res: Resource, namespace: str | None, name: str) -> Key:
    return (res.group, res.version, res.plural, namespace if res.namespaced else None, name)


def _sort_key(obj: Obj) -> str:
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


class ObjectStore:
    """Every object, one resourceVersion counter and the event log watches read from.

    Stored dicts are never mutated after they are stored: every write builds a new dict, so the
    HTTP layer can serialise them after the lock is released.
    """

    def __init__(self, resources: ResourceTable, clock: Clock, history: int = 20_000) -> None:
        self.resources = resources
        self.clock = clock
        self.cond = threading.Condition(threading.RLock())
        self._objects: dict[Key, Obj] = {}
        self._rv = 0
        self._events: list[WatchEvent] = []
        self._events_base = 1  # rv of self._events[0]
        self._history = history
        self._logs: dict[tuple[str, str, str, bool], str] = {}

    @property
    def rv(self) -> int:
        return self._rv

    # reads

    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        with self.cond:
            obj = self._objects.get(_key(res, namespace, name))
        if obj is None:
            raise ApiError.not_found(res, name)
        return obj

    def select(
        self,
        res: Resource,
        namespace: str | None,
        match: Callable[[Obj], bool] | None = None,
    ) -> tuple[list[Obj], int]:
        with self.cond:
            items = [
                obj
                for key, obj in self._objects.items()
                if key[:3] == (res.group, res.version, res.plural)
                and (namespace is None or key[3] == namespace)
                and (match is None or match(obj))
            ]
            rv = self._rv
        items.sort(key=_sort_key)
        return items, rv

    def log(self, namespace: str, pod: str, container: str, previous: bool) -> str | None:
        with self.cond:
            return self._logs.get((namespace, pod, container, previous))

    def set_log(self, namespace: str, pod: str, container: str, text: str, previous: bool) -> None:
        with self.cond:
            self._logs[(namespace, pod, container, previous)] = text

    # writes

    def create(
        self,
        res: Resource,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        trusted: bool = False,
        dry_run: bool = False,
    ) -> tuple[Obj, list[Change]]:
        obj = _check_type(res, copy.deepcopy(dict(body)))
        meta = _metadata(obj)
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        with self.cond:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(res, namespace, str(meta["generateName"]))
            name = str(meta.get("name") or "")
            if res.namespaced and namespace is not None:
                namespaces = self.resources.find("namespaces")
                if _key(namespaces, None, namespace) not in self._objects:
                    raise ApiError.not_found(namespaces, namespace)
            _apply_defaults(res, obj, name)
            if not trusted:
                _reset_status(res, obj)
            _validate(res, obj)
            key = _key(res, namespace, name)
            if key in self._objects:
                raise ApiError.already_exists(res, name)
            for system_field in ("resourceVersion", "selfLink", "managedFields"):
                meta.pop(system_field, None)
            meta.pop("deletionTimestamp", None)
            meta.pop("deletionGracePeriodSeconds", None)
            meta["uid"] = str(uuid.uuid4())
            if not (trusted and meta.get("creationTimestamp")):
                meta["creationTimestamp"] = self._now()
            if res.generation:
                meta["generation"] = 1
            if dry_run:
                return obj, []
            self._commit(res, key, "ADDED", obj)
        return obj, [Change("create", obj)]

    def update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        compute: Callable[[Obj], Any],
        *,
        verb: str,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, list[Change]]:
        """Read-modify-write under the lock; `compute` gets a private copy of the current object."""
        with self.cond:
            key = _key(res, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise ApiError.not_found(res, name)
            proposed = compute(copy.deepcopy(old))
            if not isinstance(proposed, dict):
                raise ApiError.bad_request("the patched or updated object is not a JSON object")
            new = _check_type(res, proposed)
            meta = _metadata(new)
            if meta.get("name", name) != name:
                raise ApiError.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on "
                    f"the URL ({name})"
                )
            if res.namespaced and meta.get("namespace", namespace) != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            old_meta = old["metadata"]
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old_meta["resourceVersion"]:
                raise ApiError.conflict(res, name)
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(old)
                meta = new["metadata"]
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif "status" in res.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta["name"] = name
            if res.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            for system_field in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ):
                if system_field in old_meta:
                    meta[system_field] = old_meta[system_field]
                else:
                    meta.pop(system_field, None)
            if subresource is None:
                _apply_defaults(res, new, name)
                _validate(res, new)
                _check_immutable(res, old, new)
                if res.generation and _spec_of(new) != _spec_of(old):
                    meta["generation"] = int(old_meta.get("generation", 1)) + 1
            if new == old:
                return old, []  # a no-op write keeps the resourceVersion, as the real server does
            if dry_run:
                return new, []
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                deleted = self._remove(res, key, final=new)
                return deleted, [Change("delete", deleted)]
            self._commit(res, key, "MODIFIED", new, prev=old)
        return new, [Change(verb, new)]

    def delete(
        self, res: Resource, namespace: str | None, name: str, options: DeleteOptions
    ) -> tuple[Obj, bool, list[Change]]:
        """Returns (object, removed now?, changes); finalizers turn a delete into a mark."""
        with self.cond:
            key = _key(res, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise ApiError.not_found(res, name)
            meta = old["metadata"]
            if options.uid and options.uid != meta["uid"]:
                raise ApiError.conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {options.uid}, UID in object "
                    f"meta: {meta['uid']}",
                )
            if options.resource_version and options.resource_version != meta["resourceVersion"]:
                raise ApiError.conflict(
                    res,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{options.resource_version}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old, False, []
                marked = copy.deepcopy(old)
                marked["metadata"]["deletionTimestamp"] = self._now()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                if options.dry_run:
                    return marked, False, []
                self._commit(res, key, "MODIFIED", marked, prev=old)
                return marked, False, [Change("update", marked)]
            if options.dry_run:
                return old, True, []
            changes: list[Change] = []
            if res.plural == "namespaces" and not res.group:
                for other in list(self._objects):
                    if other[3] == name and other != key:
                        changes.append(
                            Change("delete", self._remove(self._resource_of(other), other))
                        )
            deleted = self._remove(res, key)
            changes.append(Change("delete", deleted))
        return deleted, True, changes

    # watch support

    def events_after(self, cursor: int) -> list[WatchEvent] | None:
        """Events newer than `cursor`, or None when they have been compacted away (410 Gone)."""
        with self.cond:
            if cursor + 1 < self._events_base:
                return None
            return self._events[max(0, cursor + 1 - self._events_base) :]

    def wait_after(
        self, cursor: int, timeout: float, stopping: threading.Event
    ) -> tuple[list[WatchEvent] | None, int]:
        """Wait up to `timeout` for writes after `cursor`; also returns the compaction point."""
        with self.cond:
            self.cond.wait_for(lambda: self._rv > cursor or stopping.is_set(), timeout)
            return self.events_after(cursor), self._events_base - 1

    # internals (called with the lock held)

    def _now(self) -> str:
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _resource_of(self, key: Key) -> Resource:
        res = self.resources.at(key[0], key[1], key[2])
        assert res is not None
        return res

    def _generate_name(self, res: Resource, namespace: str | None, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        for _ in range(100):
            name = prefix + "".join(secrets.choice(alphabet) for _ in range(5))
            if _key(res, namespace, name) not in self._objects:
                return name
        raise ApiError(500, "InternalError", f"cannot generate a unique name from {prefix!r}")

    def _remove(self, res: Resource, key: Key, final: Obj | None = None) -> Obj:
        old = self._objects[key]
        deleted = copy.deepcopy(old if final is None else final)
        self._commit(res, key, "DELETED", deleted, prev=old)
        if res.plural == "pods" and not res.group:
            for log_key in [k for k in self._logs if k[:2] == (key[3], key[4])]:
                del self._logs[log_key]
        return deleted

    def _commit(
        self, res: Resource, key: Key, event_type: str, obj: Obj, prev: Obj | None = None
    ) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if event_type == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        self._events.append(WatchEvent(self._rv, event_type, res, obj, prev))
        if len(self._events) > self._history:
            drop = len(self._events) - self._history // 2
            del self._events[:drop]
            self._events_base += drop
        self.cond.notify_all()


def _metadata(obj: Obj) -> Obj:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise ApiError.bad_request("metadata must be a JSON object")
    return meta


def _check_type(res: Resource, obj: Obj) -> Obj:
    """apiVersion and kind default from the URL, and must agree with it when given."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != res.api_version:
        raise ApiError.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({res.api_version})"
        )
    if kind and kind != res.kind:
        raise ApiError.bad_request(
            f'{kind} in version "{res.version}" cannot be handled as a {res.kind}: the kind in '
            f"the data does not match the resource"
        )
    obj["apiVersion"], obj["kind"] = res.api_version, res.kind
    return obj


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for field_name in ("initContainers", "containers"):
        for container in spec.get(field_name) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            if isinstance(container.get("image"), str):
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))


def _apply_defaults(res: Resource, obj: Obj, name: str) -> None:
    """The defaulting the real server does for the fields the bot reads or shows."""
    if res.group == _CORE and res.plural == "pods":
        _default_pod_spec(obj.get("spec"))
    elif res.group == _APPS and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        _default_pod_spec(_path(spec, "template.spec"))
        spec.setdefault("revisionHistoryLimit", 10)
        if res.plural == "daemonsets":
            spec.setdefault(
                "updateStrategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            )
        else:
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
    elif res.group == _CORE and res.plural == "namespaces" and name:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")


def _qos_class(spec: Any) -> str:
    containers = (spec or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for k in ("cpu", "memory"):
            if not limits.get(k) or requests.get(k, limits[k]) != limits[k]:
                return "Burstable"  # requests default to limits, so only a gap makes Burstable
    return "Guaranteed"


def _reset_status(res: Resource, obj: Obj) -> None:
    """Clients cannot create status: the server sets the initial one (nodes keep theirs)."""
    if res.group == _CORE and res.plural == "pods":
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec"))}
    elif res.group == _APPS and res.plural == "daemonsets":
        obj["status"] = {
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0,
        }
    elif res.group == _APPS and res.plural == "deployments":
        obj["status"] = {}
    elif res.group == _CORE and res.plural == "services":
        obj["status"] = {"loadBalancer": {}}
    elif res.group == _CORE and res.plural == "namespaces":
        obj["status"] = {"phase": "Active"}


def _validate(res: Resource, obj: Obj) -> None:
    meta = obj["metadata"]
    name = str(meta.get("name") or "")
    causes: list[tuple[str, str, str]] = []
    if not name:
        causes.append(
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    else:
        problem = name_problem(name, res.name_format)
        if problem:
            causes.append(
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(name)}: {problem}",
                )
            )
    for label_field in ("labels", "annotations"):
        values = meta.get(label_field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            raise ApiError.bad_request(
                f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{label_field} "
                "of type string"
            )
    for required in res.required:
        if not _path(obj, required):
            causes.append((required, "FieldValueRequired", "Required value"))
    if res.group == _CORE and res.plural == "pods":
        causes += _pod_spec_problems(obj.get("spec"), "spec")
    if res.group == _APPS and _path(obj, "spec.template.spec.containers"):
        causes += _pod_spec_problems(_path(obj, "spec.template.spec"), "spec.template.spec")
        selector = _path(obj, "spec.selector")
        labels = _path(obj, "spec.template.metadata.labels") or {}
        try:
            parsed = LabelSelector.from_api(selector)
        except SelectorError as exc:
            causes.append(("spec.selector", "FieldValueInvalid", f"Invalid value: {exc}"))
        else:
            if parsed.empty:
                causes.append(
                    (
                        "spec.selector",
                        "FieldValueInvalid",
                        "Invalid value: empty selector is invalid",
                    )
                )
            elif not parsed.matches(labels):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        "FieldValueInvalid",
                        f"Invalid value: {json.dumps(labels, sort_keys=True)}: `selector` does "
                        "not match template `labels`",
                    )
                )
    if causes:
        raise ApiError.invalid(res, name, causes)


_POD_MUTABLE = (
    "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _check_immutable(res: Resource, old: Obj, new: Obj) -> None:
    """Updates the real server refuses: most of a pod's spec, and a workload's selector."""
    name = new["metadata"]["name"]
    if res.group == _CORE and res.plural == "pods":

        def frozen(spec: Any) -> Any:
            spec = copy.deepcopy(spec or {})
            for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
                spec.pop(key, None)
            for field_name in ("containers", "initContainers"):
                for container in spec.get(field_name) or []:
                    if isinstance(container, dict):
                        container.pop("image", None)
            return spec

        if frozen(old.get("spec")) != frozen(new.get("spec")):
            text = f"Forbidden: pod updates may not change fields other than {_POD_MUTABLE}"
            raise ApiError.invalid(res, name, [("spec", "FieldValueForbidden", text)])
    if res.group == _APPS and _path(old, "spec.selector") != _path(new, "spec.selector"):
        selector = json.dumps(_path(new, "spec.selector"), sort_keys=True)
        text = f"Invalid value: {selector}: field is immutable"
        raise ApiError.invalid(res, name, [("spec.selector", "FieldValueInvalid", text)])


def _pod_spec_problems(spec: Any, prefix: str) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    if not isinstance(spec, dict):
        return causes
    seen: set[str] = set()
    for field_name in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(field_name) or []):
            where = f"{prefix}.{field_name}[{i}]"
            if not isinstance(container, dict):
                causes.append((where, "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            name = container.get("name")
            if not name:
                causes.append((f"{where}.name", "FieldValueRequired", "Required value"))
            elif not is_dns1123_label(str(name)):
                causes.append(
                    (f"{where}.name", "FieldValueInvalid", f"Invalid value: {json.dumps(name)}")
                )
            elif name in seen:
                causes.append(
                    (f"{where}.name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}")
                )
            else:
                seen.add(str(name))
            if not container.get("image"):
                causes.append((f"{where}.image", "FieldValueRequired", "Required value"))
    return causes


# --- selectors bound to a resource -------------------------------------------------------------


def _field_selector(res: Resource, text: str | None) -> FieldSelector:
    selector = FieldSelector.parse(text)
    supported = {"metadata.name", *res.field_labels}
    if res.namespaced:
        supported.add("metadata.namespace")
    for label in selector.fields:
        if label not in supported:
            raise SelectorError(f"field label not supported: {label}")
    return selector


def _field_values(res: Resource, obj: Obj, labels: Iterable[str]) -> dict[str, str]:
    values = {}
    for label in labels:
        value = field_value(obj, _FIELD_PATHS.get((res.plural, label), label))
        if not value and label in _BOOL_FIELDS:
            value = "false"
        values[label] = value
    return values


def _matcher(
    res: Resource, namespace: str | None, labels: LabelSelector, fields: FieldSelector
) -> Callable[[Obj], bool]:
    def match(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        if not labels.matches(meta.get("labels")):
            return False
        return fields.matches(_field_values(res, obj, fields.fields))

    return match


def _selectors(res: Resource, query: Mapping[str, str]) -> tuple[LabelSelector, FieldSelector]:
    try:
        return (
            LabelSelector.parse(query.get("labelSelector")),
            _field_selector(res, query.get("fieldSelector")),
        )
    except SelectorError as exc:
        raise ApiError.bad_request(str(exc)) from None


def _translate(
    ev: WatchEvent, res: Resource, match: Callable[[Obj], bool]
) -> tuple[str, Obj] | None:
    """What one watcher sees of an event: objects entering or leaving its selector are ADDED or
    DELETED, as the real watch cache reports them."""
    if ev.resource is not res:
        return None
    if ev.type == "ADDED":
        return ("ADDED", ev.obj) if match(ev.obj) else None
    if ev.type == "DELETED":
        return ("DELETED", ev.obj) if match(ev.obj) else None
    now_matches = match(ev.obj)
    before = ev.prev is not None and match(ev.prev)
    if now_matches:
        return ("MODIFIED" if before else "ADDED", ev.obj)
    if before and ev.prev is not None:
        gone = copy.deepcopy(ev.prev)
        gone["metadata"]["resourceVersion"] = str(ev.rv)
        return ("DELETED", gone)
    return None


# --- HTTP --------------------------------------------------------------------------------------


def _parse_bool(value: str | None, param: str) -> bool:
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ApiError.bad_request(f'invalid value for {param}: strconv.ParseBool: parsing "{value}"')


def _parse_int(value: str | None, param: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError.bad_request(
            f'invalid value for {param}: strconv.ParseInt: parsing "{value}": invalid syntax'
        ) from None


def _list_item(obj: Obj) -> Obj:
    """List items omit kind and apiVersion on the wire; only the list carries them."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


@dataclass
class _Route:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: ApiServer) -> None:
        self.api = api
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a watch event must not wait for the client's delayed ACK
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # plumbing

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError.bad_request(
                f"couldn't get version/kind; json parse error: {exc}"
            ) from None

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(body)

    def _send_fault(self, code: int, retry_after: int | None) -> None:
        reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
        error = ApiError(code, reason.get(code, "InternalError"), f"injected fault {code}")
        body = json.dumps(error.status, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            raw = self._body()
            fault = self.api.take_fault(method, url.path)
            if fault is not None:
                self._send_fault(*fault)
                return
            self._serve(method, url.path, query, raw)
        except ApiError as exc:
            self._send_json(exc.code, exc.status)
        except _ClientGone:
            self.close_connection = True
        except Exception as exc:  # a bug in the lab: answer like the real server, log loudly
            _log.exception("lab API server failed on %s %s", method, self.path)
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc}")
            try:
                self._send_json(500, error.status)
            except OSError:
                self.close_connection = True

    def _serve(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        segments = [unquote(s) for s in path.split("/") if s]
        health = segments in (["healthz"], ["livez"], ["readyz"])
        discovery = (
            segments == ["version"]
            or (segments[:1] == ["api"] and len(segments) <= 2)
            or (segments[:1] == ["apis"] and len(segments) <= 3)
        )
        if health or discovery:
            if method != "GET":
                raise ApiError.method_not_allowed()
            if health:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            else:
                self._send_json(200, self.api.discovery(segments))
            return
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif segments[:1] == ["apis"] and len(segments) > 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise ApiError.no_route()
        route = self._route(group, version, rest)
        if route.subresource is None and route.name is None:
            self._collection(method, route, query, raw)
        elif route.subresource is None:
            self._object(method, route, query, raw)
        else:
            self._subresource(method, route, query, raw)

    def _route(self, group: str, version: str, rest: list[str]) -> _Route:
        table = self.api.resources
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        if not rest:
            raise ApiError.no_route()
        nested = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            nested = table.at(group, version, rest[2])
            if nested is not None and not nested.namespaced:
                nested = None
            if (nested is None and group) or len(rest) > 5:
                raise ApiError.no_route()
        if nested is not None:
            res, namespace = nested, rest[1]
            name = rest[3] if len(rest) > 3 else None
            sub = rest[4] if len(rest) > 4 else None
        else:
            found = table.at(group, version, rest[0])
            if found is None or len(rest) > 3 or (found.namespaced and len(rest) > 1):
                raise ApiError.no_route()
            res, namespace = found, None
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise ApiError.no_route()
        return _Route(res, namespace, name, sub, watch_path)

    def _authorize(self, verb: str, route: _Route) -> None:
        if verb not in route.res.verbs:
            raise ApiError.method_not_allowed()
        attrs = RequestAttributes(
            verb=verb,
            group=route.res.group,
            resource=route.res.plural,
            subresource=route.subresource or "",
            namespace=route.namespace,
            name=route.name,
        )
        self.api.authorizer.check(self._token(), attrs)

    # collections and objects

    def _collection(self, method: str, route: _Route, query: dict[str, str], raw: bytes) -> None:
        res = route.res
        if method == "GET":
            watch = route.watch_path or _parse_bool(query.get("watch"), "watch")
            self._authorize("watch" if watch else "list", route)
            labels, fields = _selectors(res, query)
            match = _matcher(res, route.namespace, labels, fields)
            if watch:
                self._watch(route, match, query)
            else:
                self._send_json(200, self.api.list_response(res, route.namespace, match, query))
        elif method == "POST":
            if res.namespaced and route.namespace is None:
                raise ApiError.method_not_allowed()
            review = res.plural == "selfsubjectaccessreviews"
            if not review:  # every user may ask what they may do (system:basic-user)
                self._authorize("create", route)
            body = self._json_body(raw)
            if not isinstance(body, dict):
                raise ApiError.bad_request("the body of a create must be a JSON object")
            if review:
                self._send_json(201, self.api.review(self._token(), body))
                return
            dry_run = query.get("dryRun") == "All"
            obj = self.api.apply_create(res, route.namespace, body, dry_run=dry_run)
            self._send_json(201, obj)
        elif method == "DELETE":
            self._authorize("deletecollection", route)
            labels, fields = _selectors(res, query)
            match = _matcher(res, route.namespace, labels, fields)
            deleted = self.api.delete_matching(res, route.namespace, match)
            self._send_json(
                200,
                {
                    "kind": f"{res.kind}List",
                    "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(self.api.resource_version)},
                    "items": [_list_item(o) for o in deleted],
                },
            )
        else:
            raise ApiError.method_not_allowed()

    def _object(self, method: str, route: _Route, query: dict[str, str], raw: bytes) -> None:
        res, name = route.res, route.name
        assert name is not None
        dry_run = query.get("dryRun") == "All"
        if method == "GET" and route.watch_path:
            self._authorize("watch", route)
            labels, fields = _selectors(res, query)
            by_name = _matcher(res, route.namespace, labels, fields)
            self._watch(route, lambda o: o["metadata"]["name"] == name and by_name(o), query)
        elif method == "GET":
            self._authorize("get", route)
            self._send_json(200, self.api._store.get(res, route.namespace, name))
        elif method == "PUT":
            self._authorize("update", route)
            body = self._json_body(raw)
            obj = self.api.apply_update(res, route.namespace, name, body, None, dry_run)
            self._send_json(200, obj)
        elif method == "PATCH":
            self._authorize("patch", route)
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            body = self._json_body(raw)
            obj = self.api.apply_patch(
                res, route.namespace, name, content_type, body, None, dry_run
            )
            self._send_json(200, obj)
        elif method == "DELETE":
            self._authorize("delete", route)
            options = self._delete_options(raw, query)
            obj, removed = self.api.apply_delete(res, route.namespace, name, options)
            if not removed:
                self._send_json(202 if not options.dry_run else 200, obj)
            elif res.returns_object:
                self._send_json(200, obj)
            else:
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": res.details(name, uid=obj["metadata"]["uid"]),
                }
                self._send_json(200, status)
        else:
            raise ApiError.method_not_allowed()

    def _delete_options(self, raw: bytes, query: Mapping[str, str]) -> DeleteOptions:
        body = self._json_body(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise ApiError.bad_request("DeleteOptions must be a JSON object")
        pre = body.get("preconditions") or {}
        dry_run = query.get("dryRun") == "All" or "All" in (body.get("dryRun") or [])
        return DeleteOptions(pre.get("uid"), pre.get("resourceVersion"), dry_run)

    def _subresource(self, method: str, route: _Route, query: dict[str, str], raw: bytes) -> None:
        res, name, sub = route.res, route.name, route.subresource
        assert name is not None and sub is not None
        dry_run = query.get("dryRun") == "All"
        if sub == "log":
            if method != "GET":
                raise ApiError.method_not_allowed()
            self._authorize("get", route)
            assert route.namespace is not None
            text = self.api.pod_log(route.namespace, name, query)
            self._send(200, text.encode(), "text/plain")
        elif method == "GET":
            self._authorize("get", route)
            self._send_json(200, self.api._store.get(res, route.namespace, name))
        elif method == "PUT":
            self._authorize("update", route)
            body = self._json_body(raw)
            obj = self.api.apply_update(res, route.namespace, name, body, sub, dry_run)
            self._send_json(200, obj)
        elif method == "PATCH":
            self._authorize("patch", route)
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            body = self._json_body(raw)
            obj = self.api.apply_patch(res, route.namespace, name, content_type, body, sub, dry_run)
            self._send_json(200, obj)
        else:
            raise ApiError.method_not_allowed()

    # watch

    def _watch(self, route: _Route, match: Callable[[Obj], bool], query: dict[str, str]) -> None:
        store = self.api._store
        timeout = _parse_int(query.get("timeoutSeconds"), "timeoutSeconds")
        deadline = time.monotonic() + (
            timeout if timeout and timeout > 0 else WATCH_TIMEOUT_DEFAULT
        )
        rv_param = query.get("resourceVersion") or "0"
        initial: list[WatchEvent] = []
        with store.cond:
            if rv_param == "0":
                cursor = store.rv
                items, _ = store.select(route.res, route.namespace, match)
                initial = [WatchEvent(cursor, "ADDED", route.res, obj) for obj in items]
            else:
                parsed = _parse_int(rv_param, "resourceVersion")
                assert parsed is not None
                cursor = parsed
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            for ev in initial:
                self._event("ADDED", ev.obj)
            while not self.server.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events, oldest = store.wait_after(cursor, min(remaining, 1.0), self.server.stopping)
                if events is None:
                    expired = ApiError(
                        410, "Expired", f"too old resource version: {cursor} ({oldest})"
                    )
                    self._event("ERROR", expired.status)
                    break
                for ev in events:
                    seen = _translate(ev, route.res, match)
                    if seen is not None:
                        self._event(*seen)
                    cursor = ev.rv
                if not events and self._client_gone():
                    raise _ClientGone
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            raise _ClientGone from None

    def _event(self, event_type: str, obj: Obj) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode()
        line += b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True


# --- the server --------------------------------------------------------------------------------


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
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        for ns in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # lifecycle

    def start(self) -> ApiServer:
        if self._httpd is not None:
            raise RuntimeError("the lab API server is already running")
        self._httpd = _HttpServer((self.host, self.port), self)
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
        """PUT semantics: a stale metadata.resourceVersion raises a 409 `ApiError`."""
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
            raise ApiError.bad_request("the body of an update must be a JSON object")
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
                raise ApiError(exc.code, reasons.get(exc.code, "Invalid"), str(exc)) from None

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
            except ApiError as exc:
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
                raise ApiError.bad_request(
                    f"continue key is not valid: incorrect encoded start resourceVersion (version "
                    f"meta.k8s.io/v1): {token}"
                ) from None
            items = [o for o in items if _sort_key(o) >= start]
        limit = _parse_int(query.get("limit"), "limit")
        if limit is not None and limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            next_start = _sort_key(items[-1]) + "\x00"
            next_token = {"v": "meta.k8s.io/v1", "rv": rv, "start": next_start}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(next_token).encode()).decode()
            meta["remainingItemCount"] = rest
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": [_list_item(o) for o in items],
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
                raise ApiError.bad_request(message)
        elif not any(container in group for group in names.values()):
            raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
        previous = _parse_bool(query.get("previous"), "previous")
        text = self._store.log(namespace, name, container, previous)
        if text is None:
            if previous:
                raise ApiError.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            text = ""
        tail = _parse_int(query.get("tailLines"), "tailLines")
        if tail is not None and tail >= 0:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - tail :]) if tail else ""
        limit = _parse_int(query.get("limitBytes"), "limitBytes")
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
            raise ApiError.invalid(
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
        raise ApiError.no_route()

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
        labels, fields = _selectors(
            res, {"labelSelector": label_selector, "fieldSelector": field_selector}
        )
        ns = namespace if res.namespaced else None
        items, _ = self._store.select(res, ns, _matcher(res, ns, labels, fields))
        return copy.deepcopy(items)


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


__all__ = [
    "DEFAULT_NAMESPACES",
    "RESOURCES",
    "VERSION_INFO",
    "ApiError",
    "ApiServer",
    "Authorizer",
    "Change",
    "ObjectStore",
    "PolicyRule",
    "RequestAttributes",
    "Resource",
    "ResourceTable",
    "write_kubeconfig",
]
