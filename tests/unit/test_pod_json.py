"""The typed pod decode (pod_json.py) against `parse_pod`, the one meaning of a pod's fields: on
the pods of real bundles, on varied shapes (init containers, statuses without spec, null and
missing fields) and on any JSON in any field, the typed decode gives what `parse_pod` gives or
leaves the pod to it; and a bundle read through it reads as before (fallback, namespace fill-in,
object limit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flannel_bot.executors.bundle import BundleReader, Limits
from flannel_bot.executors.bundle.listjson import decode_items, decode_whole
from flannel_bot.executors.kube.parsing import parse_pod
from flannel_bot.executors.kube.pod_json import PodDecoder

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dump"
INCIDENTS = Path(__file__).resolve().parents[1] / "incidents" / "bundles"


def parsed(pod: Any, namespace: str | None = None) -> Any:
    """What the reader made of a pod before the typed decode: the namespace filled in, then
    `parse_pod` (None for an item that is not a JSON object: it is skipped)."""
    if not isinstance(pod, dict):
        return None
    meta = pod.get("metadata")
    if namespace is not None and isinstance(meta, dict) and not meta.get("namespace"):
        meta["namespace"] = namespace
    return parse_pod(pod)


def typed(pod: Any, namespace: str | None = None) -> Any:
    return PodDecoder(namespace).decode(json.dumps(pod).encode())


def container_status(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": f"{name}:1", "ready": True, "restartCount": 0, **fields}


USUAL = [
    {},
    {"metadata": None, "spec": None, "status": None},
    {"metadata": {"name": "bare"}},
    {
        "metadata": {
            "name": "kube-flannel-ds-x",
            "namespace": "kube-flannel",
            "uid": "u1",
            "labels": {"app": "flannel", "empty": None},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "not-controller"},
                {"kind": "DaemonSet", "name": "kube-flannel-ds", "controller": True},
            ],
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z",
            "annotations": {"big": "x" * 1000},
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:a": {"f:b": {}}}}],
        },
        "spec": {
            "nodeName": "w1",
            "hostNetwork": True,
            "initContainers": [
                {"name": "install-cni-plugin", "image": "flannel-cni-plugin:v1"},
                {"name": "install-cni", "image": "flannel:v1"},
            ],
            "containers": [{"name": "kube-flannel", "image": "flannel:v1", "args": ["--ip-masq"]}],
            "volumes": [{"name": "run", "hostPath": {"path": "/run/flannel"}}],
        },
        "status": {
            "phase": "Running",
            "podIP": "172.20.0.11",
            "hostIP": "172.20.0.11",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True", "lastProbeTime": None},
            ],
            "initContainerStatuses": [
                container_status(
                    "install-cni-plugin",
                    state={"terminated": {"reason": "Completed", "exitCode": 0}},
                ),
                container_status(
                    "install-cni", state={"terminated": {"reason": "Completed", "exitCode": 0}}
                ),
            ],
            "containerStatuses": [
                container_status(
                    "kube-flannel",
                    restartCount=7,
                    ready=False,
                    state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    lastState={"terminated": {"reason": "Error", "exitCode": 1}},
                ),
                # a status without a spec: kept, not hidden
                container_status("sidecar", state={"running": {"startedAt": "now"}}),
            ],
        },
    },
    {  # a spec without statuses (Pending), no owner that is a controller, nulls everywhere
        "metadata": {
            "name": "p",
            "namespace": "",
            "labels": None,
            "ownerReferences": [{"kind": "Job", "name": "j", "controller": False}],
        },
        "spec": {
            "nodeName": None,
            "hostNetwork": None,
            "containers": [{"name": "a"}, {"name": None, "image": None}, {}],
            "initContainers": None,
        },
        "status": {
            "phase": None,
            "conditions": [{"type": "Ready", "status": "False"}, {}],
            "containerStatuses": [
                {"name": "a", "state": {}, "lastState": {}},
                {"name": "a", "state": {"terminated": None}, "lastState": {"terminated": None}},
                {"state": {"waiting": {}, "running": {}}, "restartCount": None, "ready": None},
            ],
        },
    },
    {  # the same container named twice in the spec, a status for it and for none of them
        "metadata": {"name": "twice"},
        "spec": {"containers": [{"name": "c", "image": "i1"}, {"name": "c", "image": "i2"}]},
        "status": {
            "containerStatuses": [
                {"name": "c", "image": "status-image", "state": {"running": {}}},
                {"name": "other", "image": "o", "restartCount": 2},
            ]
        },
    },
]


@pytest.mark.parametrize("pod", USUAL, ids=range(len(USUAL)))
@pytest.mark.parametrize("namespace", [None, "from-dir"])
def test_usual_shapes_are_decoded_typed_as_parse_pod_reads_them(
    pod: dict[str, Any], namespace: str | None
) -> None:
    got = typed(pod, namespace)
    assert got is not None, "the typed decode should take this pod"
    assert got == parsed(json.loads(json.dumps(pod)), namespace)


def test_the_pods_of_the_example_and_incident_bundles_decode_alike() -> None:
    files = sorted(EXAMPLE.glob("*/pods.json")) + sorted(INCIDENTS.glob("*/*/pods.json"))
    pods = [p for f in files for p in json.loads(f.read_text())["items"]]
    assert len(files) >= 10 and len(pods) >= 30
    for pod in pods:
        assert typed(pod, "ns") == parsed(pod, "ns")
    assert all(typed(pod) is not None for pod in pods), "real pods should be decoded typed"


ODD = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "Ready", "True", "running", "a", "c"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


def shaped(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Either `value` or any JSON at all, for one field."""
    return st.one_of(value, ODD)


def fields(**given_fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: shaped(v) for k, v in given_fields.items()})


NAMES = st.sampled_from(["a", "b", "c", ""])
TEXT = st.sampled_from(["", "x", "Ready", "True", "CrashLoopBackOff"])
STATE = fields(reason=TEXT, message=TEXT, exitCode=st.integers(-3, 300))
STATUS = fields(
    name=NAMES,
    image=TEXT,
    ready=st.booleans(),
    restartCount=st.integers(0, 10),
    state=st.dictionaries(st.sampled_from(["running", "waiting", "terminated"]), STATE),
    lastState=fields(terminated=STATE),
)
SPEC_CONTAINER = fields(name=NAMES, image=TEXT)
POD = fields(
    metadata=fields(
        name=TEXT,
        namespace=st.sampled_from(["", "ns"]),
        uid=TEXT,
        labels=st.dictionaries(st.text(max_size=3), st.one_of(st.none(), TEXT)),
        ownerReferences=st.lists(
            fields(kind=TEXT, name=TEXT, controller=st.booleans()), max_size=3
        ),
        creationTimestamp=TEXT,
        deletionTimestamp=TEXT,
    ),
    spec=fields(
        nodeName=TEXT,
        hostNetwork=st.booleans(),
        initContainers=st.lists(SPEC_CONTAINER, max_size=3),
        containers=st.lists(SPEC_CONTAINER, max_size=3),
    ),
    status=fields(
        phase=TEXT,
        podIP=TEXT,
        hostIP=TEXT,
        conditions=st.lists(fields(type=TEXT, status=TEXT), max_size=3),
        initContainerStatuses=st.lists(STATUS, max_size=3),
        containerStatuses=st.lists(STATUS, max_size=3),
    ),
)


@given(st.one_of(POD, ODD), st.sampled_from([None, "dir"]))
def test_any_json_is_read_as_parse_pod_reads_it_or_left_to_it(
    pod: Any, namespace: str | None
) -> None:
    """Odd types anywhere (a number for a name, a string for `ready`, a list for the status):
    the typed decode gives parse_pod's answer or refuses the pod, never another answer."""
    got = typed(pod, namespace)
    if got is not None:
        assert got == parsed(json.loads(json.dumps(pod)), namespace)


@given(st.lists(st.one_of(POD, ODD), max_size=6), st.integers(0, 7))
def test_a_list_read_typed_is_the_list_read_as_json(items: list[Any], limit: int) -> None:
    """decode_items with the typed decode: each item its PodInfo, or its JSON where refused."""
    text = json.dumps({"kind": "PodList", "items": items}).encode()
    listed = decode_items(text, limit, typed=PodDecoder("dir").decode)
    assert listed is not None and listed.complete == (len(items) <= limit)
    assert len(listed.items) == min(len(items), limit)
    for item, got in zip(items, listed.items, strict=False):
        expected = parsed(json.loads(json.dumps(item)), "dir")
        assert (got if expected is None or not isinstance(got, dict) else parsed(got, "dir")) == (
            expected if expected is not None else item
        )


@pytest.mark.parametrize(
    "odd",
    [
        {"metadata": {"name": 5}},
        {"status": {"containerStatuses": [{"name": "a", "ready": "yes"}]}},
        {"status": {"containerStatuses": [{"name": "a", "restartCount": 1.0}]}},
        {"spec": {"hostNetwork": 1}},
        {"status": "Running"},
        {"metadata": {"ownerReferences": [None]}},
    ],
)
def test_odd_types_are_refused_by_the_typed_decode(odd: dict[str, Any]) -> None:
    assert typed(odd) is None


def test_text_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        PodDecoder().decode(b'{"metadata": ')


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "dump"))


def test_a_bundle_reads_its_pods_as_parse_pod_reads_them(bundle: Path) -> None:
    """Usual pods, pods with odd types (read by parse_pod), items that are not objects
    (skipped, a gap) and pods without a namespace (the directory's) in one pods.json."""
    items: list[Any] = [*USUAL, {"metadata": {"name": 5}}, 3, "pod", None, [1]]
    items += [{"metadata": {"name": "odd", "labels": {"a": 1}}, "spec": {"hostNetwork": "yes"}}]
    (bundle / "default" / "pods.json").write_text(json.dumps({"kind": "PodList", "items": items}))
    reader = BundleReader(bundle)
    got = reader.list_pods("default")
    expected = [parsed(p, "default") for p in json.loads(json.dumps(items))]
    assert got == [p for p in expected if p is not None]
    assert "default/pods.json: 4 item(s) are not JSON objects and were skipped" in reader.gaps
    assert ("default", "pods") not in reader.unread


def test_a_pods_file_that_is_not_utf8_reads_as_before(bundle: Path) -> None:
    pods = json.dumps({"items": [{"metadata": {"name": "p\udcff"}}, USUAL[3]]}, ensure_ascii=False)
    data = pods.encode("utf-8", errors="surrogateescape")  # a lone \xff byte in a name
    (bundle / "default" / "pods.json").write_bytes(data)
    got = BundleReader(bundle).list_pods("default")
    as_text = json.loads(data.decode("utf-8", errors="replace"))["items"]
    assert got == [parsed(p, "default") for p in as_text]
    assert got[0].name == "p\ufffd"


def test_the_object_limit_still_cuts_a_pods_file(bundle: Path) -> None:
    items = [{"metadata": {"name": f"p{i}"}} for i in range(50)]
    (bundle / "default" / "pods.json").write_text(json.dumps({"items": items}))
    reader = BundleReader(bundle, Limits(objects=20))
    pods = reader.list_pods()
    flannel = reader.list_pods("kube-flannel") + reader.list_pods("kube-system")
    default = [p for p in pods if p.namespace == "default"]
    assert len(flannel) + len(default) == 20 and default  # flannel's namespaces read first
    assert [p.name for p in default] == [f"p{i}" for i in range(len(default))]
    assert ("default", "pods") in reader.unread
    assert any(
        g.startswith("default/pods.json was cut after its first ")
        and "(the bundle's limit is 20 pods in all)" in g
        for g in reader.gaps
    )


@given(st.lists(st.one_of(ODD, st.text(max_size=4)), max_size=6), st.integers(0, 7))
def test_a_list_given_as_bytes_reads_as_its_text(items: list[Any], limit: int) -> None:
    text = json.dumps({"items": items}, ensure_ascii=False)
    assert decode_items(text.encode("utf-8", errors="surrogatepass"), limit) == decode_items(
        text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace"), limit
    )


# -- the whole list in one typed decode ------------------------------------------------------


def whole(items: list[Any], limit: int = 1_000_000, namespace: str | None = "dir") -> Any:
    text = json.dumps({"kind": "PodList", "items": items}).encode()
    return decode_whole(text, limit, PodDecoder(namespace).decode_list)


@pytest.mark.parametrize("namespace", [None, "from-dir"])
def test_a_whole_list_decodes_as_each_item_does(namespace: str | None) -> None:
    listed = whole(USUAL, namespace=namespace)
    assert listed is not None and listed.complete
    assert listed.items == [parsed(json.loads(json.dumps(p)), namespace) for p in USUAL]


def test_the_pod_lists_of_the_example_and_incident_bundles_decode_whole() -> None:
    files = sorted(EXAMPLE.glob("*/pods.json")) + sorted(INCIDENTS.glob("*/*/pods.json"))
    assert len(files) >= 10
    for f in files:
        listed = decode_whole(f.read_bytes(), 1_000_000, PodDecoder("ns").decode_list)
        assert listed is not None, f
        assert listed.items == [parsed(p, "ns") for p in json.loads(f.read_text())["items"]]


@given(st.lists(st.one_of(POD, ODD), max_size=6), st.integers(0, 7))
def test_a_whole_list_is_read_as_item_by_item_or_left_to_it(items: list[Any], limit: int) -> None:
    """All or nothing: the whole decode gives what the item-by-item reading gives (the typed
    decode of each, parse_pod of the JSON) or None, when some item has another shape."""
    text = json.dumps({"kind": "PodList", "items": items}).encode()
    listed = decode_whole(text, limit, PodDecoder("dir").decode_list)
    each = [typed(item, "dir") for item in items]
    if listed is None:
        assert None in each, "the whole decode refused a list whose every item decodes typed"
        return
    assert None not in each
    assert listed.complete == (len(items) <= limit)
    assert listed.items == each[:limit]
    assert listed.items == [parsed(json.loads(json.dumps(p)), "dir") for p in items][:limit]


@pytest.mark.parametrize(
    "text",
    [
        b'{"items": [{"metadata": {"name": "a"}}, {"metadata": ',  # not JSON
        b'{"items": [{"metadata": {"name": "a"}}, {"metadata": {"name": 5}}]}',  # one odd pod
        b'{"items": [{"metadata": {"name": "a"}}, 3]}',  # an item that is not an object
        b'{"items": {"a": 1}}',  # items not an array
        b'{"kind": "PodList"}',  # no items
        b'[{"metadata": {"name": "a"}}]',  # not an object
        b'{"items": [{"metadata": {"name": "p\xff"}}]}',  # not UTF-8
        b'{"items": [{"metadata": {"name": "a"}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
    ],
)
def test_a_list_the_whole_decode_does_not_take_is_left_to_the_items(text: bytes) -> None:
    assert decode_whole(text, 10, PodDecoder().decode_list) is None


def test_deep_nesting_in_skipped_fields_is_skipped() -> None:
    """msgspec skips what the Structs do not name without building it: 500 levels are read."""
    text = b'{"items": [{"metadata": {"name": "a", "x": ' + b"[" * 500 + b"]" * 500 + b"}}]}"
    listed = decode_whole(text, 10, PodDecoder().decode_list)
    assert listed is not None and [p.name for p in listed.items] == ["a"]


def test_the_whole_decode_stops_at_the_limit_and_ticks() -> None:
    ticks: list[int] = []
    items = [{"metadata": {"name": f"p{i}"}} for i in range(25)]
    text = json.dumps({"items": items}).encode()
    listed = decode_whole(text, 20, PodDecoder().decode_list, lambda: ticks.append(1), every=6)
    assert listed is not None and not listed.complete
    assert [p.name for p in listed.items] == [f"p{i}" for i in range(20)]
    assert len(ticks) == 4  # after 6, 12, 18 and 20 records
