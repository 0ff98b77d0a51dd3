"""Every object, one resourceVersion counter and the event log that watches read from.

HTTP requests and in-process writes (the lab playing the kubelet and the controllers) go through
this one store, under one lock, so optimistic concurrency and watch resume behave the same
whichever way a write came in.
"""

from __future__ import annotations

import copy
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flannel_bot.lab.apiserver.errors import StatusError
from flannel_bot.lab.apiserver.resources import Obj, Resource, ResourceTable
from flannel_bot.lab.apiserver.validation import (
    apply_defaults,
    check_immutable,
    check_pod_security,
    check_type,
    reset_status,
    validate,
)
from flannel_bot.ports.clock import Clock

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


def sort_key(obj: Obj) -> str:
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
            raise StatusError.not_found(res, name)
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
        items.sort(key=sort_key)
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
        obj = check_type(res, copy.deepcopy(dict(body)))
        meta = _metadata(obj)
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise StatusError.bad_request(
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
            ns_obj = None
            if res.namespaced and namespace is not None:
                namespaces = self.resources.find("namespaces")
                ns_obj = self._objects.get(_key(namespaces, None, namespace))
                if ns_obj is None:
                    raise StatusError.not_found(namespaces, namespace)
            apply_defaults(res, obj, name)
            if not trusted:
                reset_status(res, obj)
            validate(res, obj)
            if not trusted:  # the lab itself plays the kubelet and controllers: not admitted
                check_pod_security(res, obj, ns_obj)
            key = _key(res, namespace, name)
            if key in self._objects:
                raise StatusError.already_exists(res, name)
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
                raise StatusError.not_found(res, name)
            proposed = compute(copy.deepcopy(old))
            if not isinstance(proposed, dict):
                raise StatusError.bad_request("the patched or updated object is not a JSON object")
            new = check_type(res, proposed)
            meta = _metadata(new)
            if meta.get("name", name) != name:
                raise StatusError.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on "
                    f"the URL ({name})"
                )
            if res.namespaced and meta.get("namespace", namespace) != namespace:
                raise StatusError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            old_meta = old["metadata"]
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old_meta["resourceVersion"]:
                raise StatusError.conflict(res, name)
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
                apply_defaults(res, new, name)
                validate(res, new)
                check_immutable(res, old, new)
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
                raise StatusError.not_found(res, name)
            meta = old["metadata"]
            if options.uid and options.uid != meta["uid"]:
                raise StatusError.conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {options.uid}, UID in object "
                    f"meta: {meta['uid']}",
                )
            if options.resource_version and options.resource_version != meta["resourceVersion"]:
                raise StatusError.conflict(
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
        raise StatusError(500, "InternalError", f"cannot generate a unique name from {prefix!r}")

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
        raise StatusError.bad_request("metadata must be a JSON object")
    return meta


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
