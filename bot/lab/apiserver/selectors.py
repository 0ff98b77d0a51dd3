"""Label and field selectors bound to a resource, and what one watcher sees of each event.

Parsing lives in `bot.lab.apimachinery`; what depends on the resource lives here: which field
labels it supports (others are a 400, as on a real server), where a field label reads from, and
how an object entering or leaving a selector shows up in a watch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

from flannel_bot.lab.apimachinery import FieldSelector, LabelSelector, SelectorError, field_value
from flannel_bot.lab.apiserver.errors import StatusError
from flannel_bot.lab.apiserver.resources import Obj, Resource
from flannel_bot.lab.apiserver.store import WatchEvent

_FIELD_PATHS = {("events", "source"): "source.component"}
_BOOL_FIELDS = frozenset(["spec.hostNetwork", "spec.unschedulable"])


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


def matcher(
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


def parse_selectors(res: Resource, query: Mapping[str, str]) -> tuple[LabelSelector, FieldSelector]:
    try:
        return (
            LabelSelector.parse(query.get("labelSelector")),
            _field_selector(res, query.get("fieldSelector")),
        )
    except SelectorError as exc:
        raise StatusError.bad_request(str(exc)) from None


def translate(
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
