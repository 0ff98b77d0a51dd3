"""The typed events decode (event_json.py) against `parse_event`, the one meaning of an event's
fields: on the events of real bundles, on varied shapes (series, eventTime, reporting fields,
nulls, missing fields) and on any JSON in any field, a whole list decoded typed gives what
`parse_event` gives of each item or is left to it; and a bundle read through it reads as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flannel_bot.executors.bundle import BundleReader, Limits
from flannel_bot.executors.bundle.listjson import decode_whole
from flannel_bot.executors.kube.event_json import EventDecoder
from flannel_bot.executors.kube.parsing import parse_event

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dump"
INCIDENTS = Path(__file__).resolve().parents[1] / "incidents" / "bundles"


def parsed(event: Any, namespace: str | None = None) -> Any:
    """What the reader made of an event before the typed decode: the namespace filled in, then
    `parse_event` (None for an item that is not a JSON object: it is skipped)."""
    if not isinstance(event, dict):
        return None
    meta = event.get("metadata")
    if namespace is not None and isinstance(meta, dict) and not meta.get("namespace"):
        meta["namespace"] = namespace
    return parse_event(event)


def whole(items: list[Any], limit: int = 1_000_000, namespace: str | None = "dir") -> Any:
    text = json.dumps({"kind": "EventList", "items": items}).encode()
    return decode_whole(text, limit, EventDecoder(namespace).decode_list)


USUAL: list[dict[str, Any]] = [
    {},
    {"metadata": None, "involvedObject": None, "source": None, "series": None},
    {"metadata": {"name": "bare"}},
    {
        "metadata": {
            "name": "kube-flannel-ds-x.17a1",
            "namespace": "kube-flannel",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubelet"}],
        },
        "involvedObject": {"kind": "Pod", "name": "kube-flannel-ds-x", "namespace": "kube-flannel"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "type": "Warning",
        "count": 7,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:05:00Z",
        "source": {"component": "kubelet", "host": "w1"},
    },
    {  # events.k8s.io style: no count or lastTimestamp, a series, reporting fields
        "metadata": {"name": "e2", "namespace": ""},
        "involvedObject": {"kind": "Node", "name": "w2"},
        "eventTime": "2026-01-01T00:00:01.000000Z",
        "series": {"count": 3, "lastObservedTime": "2026-01-01T00:09:00Z"},
        "reportingComponent": "kubelet",
        "reportingInstance": "w2",
        "count": None,
        "lastTimestamp": None,
        "source": {},
    },
    {  # zero counts, empty strings: the later fields are read, as parse_event's `or` reads them
        "metadata": {"name": "e3", "creationTimestamp": "2026-01-01T00:00:02Z"},
        "count": 0,
        "series": {"count": 0, "lastObservedTime": ""},
        "lastTimestamp": "",
        "source": {"component": "", "host": ""},
        "reportingComponent": "rc",
    },
]


@pytest.mark.parametrize("namespace", [None, "from-dir"])
def test_a_whole_list_decodes_as_parse_event_reads_each(namespace: str | None) -> None:
    listed = whole(USUAL, namespace=namespace)
    assert listed is not None and listed.complete
    assert listed.items == [parsed(json.loads(json.dumps(e)), namespace) for e in USUAL]


def test_the_events_of_the_example_and_incident_bundles_decode_whole() -> None:
    files = sorted(EXAMPLE.glob("*/events.json")) + sorted(INCIDENTS.glob("*/*/events.json"))
    assert len(files) >= 5
    checked = 0
    for f in files:
        listed = decode_whole(f.read_bytes(), 1_000_000, EventDecoder("ns").decode_list)
        assert listed is not None, f
        assert listed.items == [parsed(e, "ns") for e in json.loads(f.read_text())["items"]]
        checked += len(listed.items)
    assert checked >= 10


ODD = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "Pod", "w1", "2026-01-01T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


def fields(**given_fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, ODD) for k, v in given_fields.items()}
    )


TEXT = st.sampled_from(["", "x", "Pod", "w1", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"])
COUNT = st.integers(-2, 5)
EVENT = fields(
    metadata=fields(name=TEXT, namespace=st.sampled_from(["", "ns"]), creationTimestamp=TEXT),
    involvedObject=fields(kind=TEXT, name=TEXT, namespace=TEXT),
    source=fields(component=TEXT, host=TEXT),
    series=fields(lastObservedTime=TEXT, count=COUNT),
    reason=TEXT,
    message=TEXT,
    type=TEXT,
    count=COUNT,
    lastTimestamp=TEXT,
    eventTime=TEXT,
    firstTimestamp=TEXT,
    reportingComponent=TEXT,
    reportingInstance=TEXT,
)


@given(st.lists(st.one_of(EVENT, ODD), max_size=6), st.integers(0, 7))
def test_any_list_is_read_as_parse_event_reads_it_or_left_to_it(
    items: list[Any], limit: int
) -> None:
    """Odd types anywhere (a number for a name, a float or true for a count, a list for the
    source): the whole decode gives parse_event's answers for every item, or None."""
    listed = whole(items, limit)
    if listed is None:
        return
    assert listed.complete == (len(items) <= limit)
    expected = [parsed(json.loads(json.dumps(e)), "dir") for e in items]
    assert None not in expected, "an item that is not an object was taken"
    assert listed.items == expected[:limit]


@pytest.mark.parametrize(
    "odd",
    [
        {"count": True},
        {"count": 1.0},
        {"metadata": {"name": 5}},
        {"source": "kubelet"},
        {"lastTimestamp": 0},
        {"series": []},
    ],
)
def test_odd_types_are_left_to_parse_event(odd: dict[str, Any]) -> None:
    assert whole([USUAL[3], odd]) is None


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "dump"))


@pytest.mark.parametrize("odd", [False, True])
def test_a_bundle_reads_its_events_as_parse_event_reads_them(bundle: Path, odd: bool) -> None:
    """Usual events (decoded whole) or a list with odd items (read as JSON: an event with a
    float count, items that are not objects, skipped with a gap), without a namespace (the
    directory's), oldest first; and the same through a field selector."""
    items: list[Any] = [*USUAL, {"metadata": {"name": "late"}, "lastTimestamp": "2027"}]
    if odd:
        items += [{"metadata": {"name": "f"}, "count": 2.0}, 3, None]
    (bundle / "default" / "events.json").write_text(json.dumps({"items": items}))
    reader = BundleReader(bundle)
    got = reader.list_events("default")
    expected = [parsed(e, "default") for e in json.loads(json.dumps(items))]
    expected = sorted((e for e in expected if e is not None), key=lambda e: e.last_timestamp)
    assert got == expected
    skipped = "default/events.json: 2 item(s) are not JSON objects and were skipped"
    assert (skipped in reader.gaps) == odd
    selected = reader.list_events("default", "involvedObject.kind=Node")
    assert selected == [e for e in expected if e.involved_kind == "Node"] != []


def test_the_object_limit_still_cuts_an_events_file(bundle: Path) -> None:
    items = [{"metadata": {"name": f"e{i}"}, "lastTimestamp": f"{i:03d}"} for i in range(50)]
    (bundle / "default" / "events.json").write_text(json.dumps({"items": items}))
    reader = BundleReader(bundle, Limits(objects=20))
    events = reader.list_events()
    default = [e for e in events if e.namespace == "default"]
    assert default and len(events) == 20
    assert sorted(e.name for e in default) == sorted(f"e{i}" for i in range(len(default)))
    assert ("default", "events") in reader.unread
    assert any(g.startswith("default/events.json was cut after its first ") for g in reader.gaps)
