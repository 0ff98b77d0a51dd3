"""An events list's JSON -> `EventInfo` in one typed decode (a support bundle's events.json).

Why beside `parse_event`: decoding 14,000 events to dicts and walking them in Python was a tenth
of reading a 5,000-node bundle's API objects. As pod_json.py does for pods, msgspec decodes
straight into Structs of only the fields `parse_event` reads, the rest skipped at C speed, and
the Structs take only shapes for which reading them here gives what `parse_event` gives
(strings or null where it reads a string, integers or null where it reads a count). A list with
any event of another shape is not taken (`decode_list` returns None), and its caller reads it
item by item with `parse_event`, as before. `parse_event` stays the one meaning of the fields:
tests/unit/test_event_json.py holds the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from flannel_bot.executors.kube.pod_json import records_of
from flannel_bot.ports.cluster import EventInfo

# field names are the API's (core/v1 Event); gc=False: the Structs hold no cycles


class _Meta(msgspec.Struct, gc=False):
    name: str | None = None
    namespace: str | None = None
    creationTimestamp: str | None = None


class _Involved(msgspec.Struct, gc=False):
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None


class _Source(msgspec.Struct, gc=False):
    component: str | None = None
    host: str | None = None


class _Series(msgspec.Struct, gc=False):
    lastObservedTime: str | None = None
    count: int | None = None


class _Event(msgspec.Struct, gc=False):
    metadata: _Meta | None = None
    involvedObject: _Involved | None = None
    source: _Source | None = None
    series: _Series | None = None
    reason: str | None = None
    message: str | None = None
    type: str | None = None
    count: int | None = None
    lastTimestamp: str | None = None
    eventTime: str | None = None
    firstTimestamp: str | None = None
    reportingComponent: str | None = None
    reportingInstance: str | None = None


class _EventList(msgspec.Struct, gc=False):
    items: list[_Event] | None = None  # the list's other keys (kind, metadata) skipped


_LIST_DECODER = msgspec.json.Decoder(_EventList)
_NO_META = _Meta()
_NO_INVOLVED = _Involved()
_NO_SOURCE = _Source()
_NO_SERIES = _Series()


class EventDecoder:
    """`parse_event` of each item of a whole events list, in one typed decode.

    `namespace`: the namespace of an event whose metadata has none (a hand-made bundle leaves it
    to the directory), as the bundle reader fills it in before `parse_event`."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace

    def decode_list(
        self, text: bytes | str, limit: int, tick: Callable[[], None], every: int = 1000
    ) -> tuple[list[EventInfo], int] | None:
        """The first `limit` events of the list's `items` and how many it holds (listjson's
        `Whole`); None when the typed decode does not take the text (not JSON, not UTF-8, no
        `items` array, an event of another shape): the caller then reads it item by item."""
        try:
            events = _LIST_DECODER.decode(text).items
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None
        if events is None:
            return None
        return records_of(events, self._record, limit, tick, every)

    def _record(self, event: _Event) -> EventInfo:
        meta = event.metadata or _NO_META
        namespace = meta.namespace
        if not namespace and self.namespace is not None and event.metadata is not None:
            namespace = self.namespace
        involved = event.involvedObject or _NO_INVOLVED
        source = event.source or _NO_SOURCE
        series = event.series or _NO_SERIES
        last = (
            event.lastTimestamp
            or series.lastObservedTime
            or event.eventTime
            or event.firstTimestamp
            or meta.creationTimestamp
        )
        return EventInfo(  # positional, in EventInfo's order
            namespace or "",
            meta.name or "",
            involved.kind or "",
            involved.name or "",
            event.reason or "",
            event.message or "",
            event.type or "",
            event.count or series.count or 1,
            last or "",
            source.component or event.reportingComponent or "",
            source.host or event.reportingInstance or "",
            involved.namespace or "",
        )
