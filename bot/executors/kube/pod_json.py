"""A pod's JSON -> `PodInfo` in one typed decode, for lists of many pods (a support bundle).

Why beside `parse_pod`: decoding each pod to dicts and walking them in Python was most of the
time spent reading a 150,000-pod bundle. Here msgspec decodes straight into small Structs that
hold only the fields `parse_pod` reads; the rest of a pod (managedFields, annotations, volumes)
is skipped at C speed, never built. `parse_pod` stays the one meaning of the fields: the Structs
accept only shapes for which reading them here gives what `parse_pod` gives (strings or null
where it reads a string, true/false/null where it takes a truth value, lists of objects where
it reads lists), and `decode_pod` returns None for any pod with another shape (a number for a
name, a string for `ready`), which its caller then reads with `parse_pod`. tests/unit/
test_pod_json.py holds the two to the same answers on varied and hostile pods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import msgspec

from flannel_bot.ports.cluster import ContainerInfo, PodInfo

# field names are the API's; gc=False: the Structs hold no cycles, and the collector need not
# track the hundreds of thousands made per list


class _Owner(msgspec.Struct, gc=False):
    kind: str | None = None
    name: str | None = None
    controller: bool | None = None


class _Meta(msgspec.Struct, gc=False):
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    labels: dict[str, str | None] | None = None
    ownerReferences: list[_Owner] | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None


class _ContainerSpec(msgspec.Struct, gc=False):
    name: str | None = None
    image: str | None = None


class _Spec(msgspec.Struct, gc=False):
    nodeName: str | None = None
    hostNetwork: bool | None = None
    initContainers: list[_ContainerSpec] | None = None
    containers: list[_ContainerSpec] | None = None


class _Condition(msgspec.Struct, gc=False):
    type: str | None = None
    status: str | None = None


class _State(msgspec.Struct, gc=False):
    reason: str | None = None
    message: str | None = None
    exitCode: int | None = None


class _LastState(msgspec.Struct, gc=False):
    terminated: _State | None = None


class _ContainerStatus(msgspec.Struct, gc=False):
    name: str | None = None
    image: str | None = None
    ready: bool | None = None
    restartCount: int | None = None
    # the first key names the state, as in parse_pod: a dict keeps the JSON's order
    state: dict[str, _State | None] | None = None
    lastState: _LastState | None = None


class _Status(msgspec.Struct, gc=False):
    phase: str | None = None
    podIP: str | None = None
    hostIP: str | None = None
    conditions: list[_Condition] | None = None
    initContainerStatuses: list[_ContainerStatus] | None = None
    containerStatuses: list[_ContainerStatus] | None = None


class _Pod(msgspec.Struct, gc=False):
    metadata: _Meta | None = None
    spec: _Spec | None = None
    status: _Status | None = None


class _PodList(msgspec.Struct, gc=False):
    items: list[_Pod] | None = None  # the list's other keys (kind, metadata) skipped


_DECODER = msgspec.json.Decoder(_Pod)
_LIST_DECODER = msgspec.json.Decoder(_PodList)
_NO_META = _Meta()
_NO_SPEC = _Spec()
_NO_STATUS = _Status()
_NO_STATE = _State()
_NO_LAST = _LastState()
_NO_STATUS_OF_CONTAINER = _ContainerStatus()
_NO_OWNER = _Owner()
_NO_CONTAINERS: tuple[ContainerInfo, ...] = ()
_READY = _Condition("Ready", "True")  # equal to a condition of that type and status


S = TypeVar("S")
R = TypeVar("R")


def records_of(
    items: list[S], record: Callable[[S], R], limit: int, tick: Callable[[], None], every: int
) -> tuple[list[R], int]:
    """A typed list's first `limit` items as `record` makes each, and how many it held, with
    `tick` every `every` records (listjson's `Whole` for pods.json and events.json)."""
    count = len(items)
    if count > limit:
        del items[limit:]
    out: list[R] = []
    for start in range(0, len(items), every):
        out += map(record, items[start : start + every])
        tick()
    return out, count


class PodDecoder:
    """Decodes the pods of one list: `decode` is `parse_pod` of one pod's JSON text, or None
    when the pod has a shape the typed decode does not take (then `parse_pod` reads it);
    `decode_list` is `decode` of each item of a whole list in one pass.

    `namespace`: the namespace of a pod whose metadata has none (a hand-made bundle leaves it to
    the directory). Containers alike in every field (a Deployment's replicas, most of them) are
    one ContainerInfo, shared: it is frozen, and a list of 150,000 pods then holds a few
    thousand instead of one per container."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace
        self._containers: dict[tuple[object, ...], ContainerInfo] = {}

    def decode(self, raw: bytes | str | msgspec.Raw) -> PodInfo | None:
        """Raises msgspec.DecodeError for text that is not JSON."""
        try:
            pod = _DECODER.decode(raw)
        except msgspec.ValidationError:
            return None
        return self._record(pod)

    def decode_list(
        self, text: bytes | str, limit: int, tick: Callable[[], None], every: int = 1000
    ) -> tuple[list[PodInfo], int] | None:
        """The first `limit` items of a pod list's `items` as `decode` makes each, and how many
        the list holds, from one typed decode of the whole text (the list's items found and
        decoded in one pass at C speed, not found first and then decoded one by one); `tick`
        every `every` records made. None when that decode does not take the text: it is not
        JSON or not UTF-8, it is not an object with an `items` array, or one item has a shape
        `decode` refuses; the caller then reads the list item by item, as without this.

        Deep nesting in the skipped fields is safe here: msgspec skips a value recursively
        under the interpreter's recursion check and raises RecursionError (here: None) long
        before the C stack is at risk (tests/unit/test_pod_json.py, 100,000 deep); the
        bundle reader refuses a list nested deeper than its depth limit before this runs."""
        try:
            pods = _LIST_DECODER.decode(text).items
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None
        if pods is None:
            return None
        return records_of(pods, self._record, limit, tick, every)

    def _record(self, pod: _Pod) -> PodInfo:
        meta = pod.metadata
        if meta is None:
            meta = _NO_META
        elif not meta.namespace and self.namespace is not None:
            meta.namespace = self.namespace
        spec = pod.spec or _NO_SPEC
        status = pod.status or _NO_STATUS
        owners = meta.ownerReferences
        owner = next((o for o in owners if o.controller), owners[0]) if owners else _NO_OWNER
        ready = _READY in status.conditions if status.conditions else False  # Struct ==, in C
        containers = self._containers_of(spec.containers, status.containerStatuses, False)
        restarts = 0
        for container in containers:
            restarts += container.restart_count
        if spec.initContainers or status.initContainerStatuses:  # few pods have them
            init = self._containers_of(spec.initContainers, status.initContainerStatuses, True)
            containers = init + containers
        labels: dict[str, str] = {}
        if meta.labels and None in meta.labels.values():
            labels = {k: v or "" for k, v in meta.labels.items()}
        elif meta.labels:
            labels = cast(dict[str, str], meta.labels)  # no None in it: strings only
        # positional, in PodInfo's order: a third faster than by keyword. Made by its own
        # __init__, not by filling its __dict__ (faster to make, but a record whose __dict__
        # was touched keeps it, and each attribute read of the rules was 2.4 times as slow)
        return PodInfo(
            meta.namespace or "",
            meta.name or "",
            spec.nodeName or "",
            status.phase or "Pending",
            ready,
            restarts,
            labels,
            owner.kind or "",
            owner.name or "",
            meta.uid or "",
            containers,
            status.podIP or "",
            status.hostIP or "",
            bool(spec.hostNetwork),
            meta.creationTimestamp or "",
            meta.deletionTimestamp or "",
        )

    def _containers_of(
        self,
        specs: list[_ContainerSpec] | None,
        statuses: list[_ContainerStatus] | None,
        init: bool,
    ) -> tuple[ContainerInfo, ...]:
        if not specs and not statuses:
            return _NO_CONTAINERS
        if specs and len(specs) == 1 and (not statuses or len(statuses) == 1):
            # one container, its status (if any) under its name: most pods, in fewer steps
            spec = specs[0]
            name = spec.name or ""
            if not statuses:
                return (self._container(name, spec.image, _NO_STATUS_OF_CONTAINER, init),)
            if (statuses[0].name or "") == name:
                return (self._container(name, spec.image, statuses[0], init),)
        by_name = {s.name or "": s for s in statuses or ()}
        names = [c.name or "" for c in specs or ()]
        names += [n for n in by_name if n not in names]  # a status without spec: keep it
        images = {c.name or "": c.image for c in specs or ()}
        return tuple(
            self._container(
                name, images.get(name), by_name.get(name, _NO_STATUS_OF_CONTAINER), init
            )
            for name in names
        )

    def _container(
        self, name: str, image: str | None, st: _ContainerStatus, init: bool
    ) -> ContainerInfo:
        state_name, state = next(iter(st.state.items())) if st.state else ("", None)
        state = state or _NO_STATE
        last = (st.lastState or _NO_LAST).terminated or _NO_STATE
        fields = (
            name,
            image or st.image or "",
            init,
            bool(st.ready),
            st.restartCount or 0,
            state_name,
            state.reason or "",
            state.message or "",
            state.exitCode,
            last.reason or "",
            last.exitCode,
        )
        container = self._containers.get(fields)
        if container is None:
            container = self._containers[fields] = ContainerInfo(*fields)
        return container
