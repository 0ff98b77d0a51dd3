"""The lab's Kubernetes API server, driven only through the official client (and raw HTTP for
discovery), so that what passes here also passes against a real cluster."""

from __future__ import annotations

import json
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from flannel_bot.lab.apiserver import ApiServer, StatusError

pytestmark = pytest.mark.integration

NS = "kube-flannel"
BOT_TOKEN = "bot-token"
BOT_USER = "system:serviceaccount:kube-flannel:flannel-bot"
BOT_RULES: list[dict[str, Any]] = [
    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["nodes"]},
    {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
    {"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["ds-a"]},
]


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(rules={BOT_TOKEN: BOT_RULES}, users={BOT_TOKEN: BOT_USER}) as srv:
        srv.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield srv


@pytest.fixture
def connect(server: ApiServer, tmp_path: Path) -> Iterator[Callable[..., client.ApiClient]]:
    """ApiClients built the way the bot builds them: load_kube_config on a written kubeconfig."""
    made: list[client.ApiClient] = []

    def make(token: str | None = None, context: str = "lab-admin") -> client.ApiClient:
        path = server.write_kubeconfig(tmp_path / f"{context}.yaml", token=token, context=context)
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(path), context=context, client_configuration=cfg)
        made.append(client.ApiClient(cfg))
        return made[-1]

    yield make
    for api in made:
        api.close()


@pytest.fixture
def core(connect: Callable[..., client.ApiClient]) -> client.CoreV1Api:
    return client.CoreV1Api(connect())


@pytest.fixture
def apps(connect: Callable[..., client.ApiClient]) -> client.AppsV1Api:
    return client.AppsV1Api(connect())


def pod(
    name: str,
    labels: dict[str, str] | None = None,
    node: str | None = None,
    containers: tuple[str, ...] = ("main",),
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [owner]
    spec: dict[str, Any] = {
        "containers": [{"name": c, "image": "busybox:1.36"} for c in containers]
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def daemonset(name: str = "kube-flannel-ds") -> dict[str, Any]:
    labels = {"app": "flannel"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "kube-flannel", "image": "ghcr.io/flannel-io/flannel:v0.26.1"},
                        {"name": "sidecar", "image": "busybox:1.36"},
                    ]
                },
            },
        },
    }


def status_of(exc: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == exc.status
    return body


def names(items: list[Any]) -> list[str]:
    return sorted(item.metadata.name for item in items)


# --- CRUD ----------------------------------------------------------------------------------------


def test_pod_create_get_list_replace_delete(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod(NS, pod("p1", {"app": "x"}, node="w1"))
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.status.phase == "Pending"  # clients cannot create status
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"  # server defaulting
    got = core.read_namespaced_pod("p1", NS)
    assert got.metadata.resource_version == created.metadata.resource_version

    listed = core.list_namespaced_pod(NS)
    assert names(listed.items) == ["p1"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)

    got.metadata.labels["tier"] = "node"
    replaced = core.replace_namespaced_pod("p1", NS, got)
    assert replaced.metadata.labels == {"app": "x", "tier": "node"}
    assert int(replaced.metadata.resource_version) > int(got.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid

    with pytest.raises(client.ApiException) as stale:
        core.replace_namespaced_pod("p1", NS, got)  # got still carries the old resourceVersion
    assert stale.value.status == 409 and stale.value.reason == "Conflict"
    assert status_of(stale.value)["message"] == (
        'Operation cannot be fulfilled on pods "p1": the object has been modified; please apply '
        "your changes to the latest version and try again"
    )

    deleted = core.delete_namespaced_pod("p1", NS)
    assert isinstance(deleted, client.V1Pod) and deleted.metadata.name == "p1"
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_pod("p1", NS)
    assert gone.value.status == 404
    assert status_of(gone.value)["reason"] == "NotFound"


def test_three_patch_types(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("p1", {"app": "x"}, containers=("a", "b")))
    strategic = core.patch_namespaced_pod(
        "p1",
        NS,
        {
            "metadata": {"labels": {"b": "1"}},
            "spec": {"containers": [{"name": "b", "image": "nginx:1"}]},
        },
    )
    assert strategic.metadata.labels == {"app": "x", "b": "1"}
    # strategic merge merges containers by name: "a" is untouched, only b's image changed
    assert [(c.name, c.image) for c in strategic.spec.containers] == [
        ("a", "busybox:1.36"),
        ("b", "nginx:1"),
    ]
    merge = core.patch_namespaced_pod(
        "p1",
        NS,
        {"metadata": {"labels": {"b": None, "c": "2"}}},
        _content_type="application/merge-patch+json",
    )
    assert merge.metadata.labels == {"app": "x", "c": "2"}
    json_patch = core.patch_namespaced_pod(
        "p1",
        NS,
        [
            {"op": "test", "path": "/metadata/labels/c", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/app", "value": "y"},
            {"op": "remove", "path": "/metadata/labels/c"},
        ],
    )
    assert json_patch.metadata.labels == {"app": "y"}
    with pytest.raises(client.ApiException) as failed:
        core.patch_namespaced_pod(
            "p1", NS, [{"op": "test", "path": "/metadata/labels/app", "value": "z"}]
        )
    assert failed.value.status == 422

    with pytest.raises(client.ApiException) as stale:
        core.patch_namespaced_pod(
            "p1",
            NS,
            {
                "metadata": {
                    "resourceVersion": merge.metadata.resource_version,
                    "labels": {"d": "4"},
                }
            },
            _content_type="application/merge-patch+json",
        )
    assert stale.value.status == 409

    with pytest.raises(client.ApiException) as moved:  # only images and a few fields may change
        core.patch_namespaced_pod("p1", NS, {"spec": {"nodeName": "w9"}})
    assert moved.value.status == 422
    assert "pod updates may not change fields other than" in status_of(moved.value)["message"]


def test_nodes_are_cluster_scoped_with_a_status_subresource(core: client.CoreV1Api) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "w1", "labels": {"kubernetes.io/hostname": "w1"}},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    created = core.create_node(node)
    assert created.metadata.namespace is None and created.status.conditions[0].status == "True"
    assert names(core.list_node().items) == ["w1"]

    # spec changes through the main resource ignore status; /status changes only status
    patched = core.patch_node(
        "w1",
        {
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        },
    )
    assert patched.spec.unschedulable is True and patched.status.conditions[0].status == "True"
    patched = core.patch_node_status(
        "w1", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )
    assert patched.status.conditions[0].status == "False"
    assert names(core.list_node(field_selector="spec.unschedulable=true").items) == ["w1"]

    current = core.read_node("w1")
    current.metadata.labels["role"] = "worker"
    assert core.replace_node("w1", current).metadata.labels["role"] == "worker"
    current.status.conditions[0].status = "Unknown"
    assert (
        core.replace_node_status("w1", core.read_node("w1")).status.conditions[0].status == "False"
    )

    result = core.delete_node("w1")  # typed `object` in client v37: the Status as a dict
    assert result["status"] == "Success" and result["details"]["name"] == "w1"
    assert core.list_node().items == []


def test_configmaps(core: client.CoreV1Api) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg"},
        "data": {"a": "1", "b": "2"},
    }
    core.create_namespaced_config_map(NS, cm)
    with pytest.raises(client.ApiException) as dup:
        core.create_namespaced_config_map(NS, cm)
    assert dup.value.status == 409
    body = status_of(dup.value)
    assert (
        body["reason"] == "AlreadyExists" and body["message"] == 'configmaps "cfg" already exists'
    )
    assert body["details"] == {"name": "cfg", "kind": "configmaps"}

    patched = core.patch_namespaced_config_map(
        "cfg", NS, {"data": {"a": None, "c": "3"}}, _content_type="application/merge-patch+json"
    )
    assert patched.data == {"b": "2", "c": "3"}
    patched.data["d"] = "4"
    assert core.replace_namespaced_config_map("cfg", NS, patched).data == {
        "b": "2",
        "c": "3",
        "d": "4",
    }

    result = core.delete_namespaced_config_map("cfg", NS)
    assert result["status"] == "Success" and result["details"]["kind"] == "configmaps"
    with pytest.raises(client.ApiException) as missing:
        core.delete_namespaced_config_map("cfg", NS)
    assert missing.value.status == 404
    assert status_of(missing.value)["message"] == 'configmaps "cfg" not found'

    with pytest.raises(client.ApiException) as no_ns:
        core.create_namespaced_config_map("nope", cm)
    assert no_ns.value.status == 404
    assert status_of(no_ns.value)["message"] == 'namespaces "nope" not found'


def test_daemonsets_generation_status_and_validation(apps: client.AppsV1Api) -> None:
    created = apps.create_namespaced_daemon_set(NS, daemonset())
    assert created.metadata.generation == 1 and created.status.number_ready == 0

    labelled = apps.patch_namespaced_daemon_set(
        "kube-flannel-ds", NS, {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled.metadata.generation == 1  # metadata is not spec
    image = {"name": "kube-flannel", "image": "ghcr.io/flannel-io/flannel:v0.26.2"}
    bumped = apps.patch_namespaced_daemon_set(
        "kube-flannel-ds", NS, {"spec": {"template": {"spec": {"containers": [image]}}}}
    )
    assert bumped.metadata.generation == 2
    assert [c.image for c in bumped.spec.template.spec.containers] == [
        "ghcr.io/flannel-io/flannel:v0.26.2",
        "busybox:1.36",
    ]

    status = {
        "currentNumberScheduled": 3,
        "desiredNumberScheduled": 3,
        "numberMisscheduled": 0,
        "numberReady": 2,
    }
    after = apps.patch_namespaced_daemon_set_status("kube-flannel-ds", NS, {"status": status})
    assert after.status.number_ready == 2 and after.metadata.generation == 2
    after.status.number_ready = 3
    assert (
        apps.replace_namespaced_daemon_set_status("kube-flannel-ds", NS, after).status.number_ready
        == 3
    )
    assert apps.read_namespaced_daemon_set_status("kube-flannel-ds", NS).status.number_ready == 3

    bad = daemonset("bad")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(client.ApiException) as invalid:
        apps.create_namespaced_daemon_set(NS, bad)
    assert invalid.value.status == 422
    body = status_of(invalid.value)
    assert body["reason"] == "Invalid" and body["message"].startswith(
        'DaemonSet.apps "bad" is invalid:'
    )
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"

    assert names(apps.list_namespaced_daemon_set(NS).items) == ["kube-flannel-ds"]
    apps.delete_namespaced_daemon_set("kube-flannel-ds", NS)
    with pytest.raises(client.ApiException) as gone:
        apps.read_namespaced_daemon_set("kube-flannel-ds", NS)
    assert status_of(gone.value)["message"] == 'daemonsets.apps "kube-flannel-ds" not found'


def test_finalizers_delay_deletion_and_deletecollection(core: client.CoreV1Api) -> None:
    for name, labels in (("keep", {"t": "1"}), ("drop1", {"t": "2"}), ("drop2", {"t": "2"})):
        core.create_namespaced_config_map(
            NS,
            {
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "finalizers": ["lab/hold"] if name == "keep" else [],
                }
            },
        )
    core.delete_namespaced_config_map("keep", NS)
    held = core.read_namespaced_config_map("keep", NS)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(
        "keep", NS, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(client.ApiException):
        core.read_namespaced_config_map("keep", NS)

    core.delete_collection_namespaced_config_map(NS, label_selector="t=2")
    assert core.list_namespaced_config_map(NS).items == []


# --- selectors -----------------------------------------------------------------------------------

LABELLED = {
    "flannel-a": {"app": "flannel", "tier": "node"},
    "flannel-b": {"app": "flannel", "tier": "edge", "canary": "true"},
    "proxy": {"app": "kube-proxy", "tier": "node"},
    "plain": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=flannel", ["flannel-a", "flannel-b"]),
        ("app==flannel", ["flannel-a", "flannel-b"]),
        ("app!=flannel", ["plain", "proxy"]),
        ("tier in (node,edge)", ["flannel-a", "flannel-b", "proxy"]),
        ("tier in (edge)", ["flannel-b"]),
        ("tier notin (node)", ["flannel-b", "plain"]),
        ("canary", ["flannel-b"]),
        ("!canary", ["flannel-a", "plain", "proxy"]),
        ("app=flannel,tier=node", ["flannel-a"]),
        ("app in (flannel, kube-proxy),!canary,tier", ["flannel-a", "proxy"]),
        ("app=nothing", []),
    ],
)
def test_label_selectors(core: client.CoreV1Api, selector: str, expected: list[str]) -> None:
    for name, labels in LABELLED.items():
        core.create_namespaced_pod(NS, pod(name, labels))
    assert names(core.list_namespaced_pod(NS, label_selector=selector).items) == expected


def test_bad_selectors_are_rejected(core: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as bad_label:
        core.list_namespaced_pod(NS, label_selector="app in (x")
    assert bad_label.value.status == 400 and status_of(bad_label.value)["reason"] == "BadRequest"
    with pytest.raises(client.ApiException) as bad_field:
        core.list_namespaced_pod(NS, field_selector="spec.hostname=x")
    assert status_of(bad_field.value)["message"] == "field label not supported: spec.hostname"


def test_field_selectors_on_pods(server: ApiServer, core: client.CoreV1Api) -> None:
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    for name, node, phase in (
        ("a", "w1", "Running"),
        ("b", "w2", "Running"),
        ("c", "w1", "Failed"),
    ):
        obj = pod(name, node=node)
        obj["status"] = {"phase": phase}
        server.create(obj, namespace=NS)  # in-process creates keep status, like a kubelet's
    server.create(pod("elsewhere", node="w1"), namespace="other")

    def listed(selector: str) -> list[str]:
        return names(core.list_namespaced_pod(NS, field_selector=selector).items)

    assert listed("spec.nodeName=w1") == ["a", "c"]
    assert listed("spec.nodeName==w2") == ["b"]
    assert listed("spec.nodeName!=w1") == ["b"]
    assert listed("status.phase=Running") == ["a", "b"]
    assert listed("status.phase!=Running,spec.nodeName=w1") == ["c"]
    assert listed("metadata.name=b") == ["b"]
    assert listed("spec.hostNetwork=false,metadata.name!=a") == ["b", "c"]
    everywhere = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=w1")
    assert sorted((p.metadata.namespace, p.metadata.name) for p in everywhere.items) == [
        (NS, "a"),
        (NS, "c"),
        ("other", "elsewhere"),
    ]
    other = core.list_pod_for_all_namespaces(field_selector="metadata.namespace=other")
    assert names(other.items) == ["elsewhere"]


def test_field_selectors_on_events(server: ApiServer, core: client.CoreV1Api) -> None:
    def event(name: str, kind: str, obj: str, reason: str, type_: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name},
            "involvedObject": {"kind": kind, "name": obj, "namespace": NS},
            "reason": reason,
            "type": type_,
            "message": f"{reason} on {obj}",
            "source": {"component": "kubelet"},
        }

    core.create_namespaced_event(NS, event("e1", "Pod", "ds-a", "BackOff", "Warning"))
    core.create_namespaced_event(NS, event("e2", "Pod", "ds-b", "Started", "Normal"))
    core.create_namespaced_event(NS, event("e3", "Node", "w1", "NodeNotReady", "Warning"))

    def listed(selector: str) -> list[str]:
        return names(core.list_namespaced_event(NS, field_selector=selector).items)

    assert listed("involvedObject.name=ds-a") == ["e1"]
    assert listed("involvedObject.kind=Pod") == ["e1", "e2"]
    assert listed("involvedObject.kind!=Pod") == ["e3"]
    assert listed("reason=NodeNotReady") == ["e3"]
    assert listed("type=Warning") == ["e1", "e3"]
    assert listed("type==Warning,involvedObject.kind=Pod") == ["e1"]
    assert listed("source=kubelet,reason=Started") == ["e2"]


def test_raw_list_and_pagination(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"cm{i}"}})
    resp = core.list_namespaced_config_map(NS, _preload_content=False)
    raw = json.loads(resp.data)
    assert raw["kind"] == "ConfigMapList" and raw["apiVersion"] == "v1"
    assert raw["metadata"]["resourceVersion"].isdigit()
    assert [i["metadata"]["name"] for i in raw["items"]] == [f"cm{i}" for i in range(5)]
    assert "kind" not in raw["items"][0]  # list items on the wire carry no kind

    page = core.list_namespaced_config_map(NS, limit=2)
    seen = names(page.items)
    while page.metadata._continue:
        page = core.list_namespaced_config_map(NS, limit=2, _continue=page.metadata._continue)
        seen += names(page.items)
    assert seen == [f"cm{i}" for i in range(5)]


# --- pods/log ------------------------------------------------------------------------------------


def test_pod_logs(server: ApiServer, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("single", containers=("kube-flannel",)))
    core.create_namespaced_pod(NS, pod("multi", containers=("kube-flannel", "sidecar")))
    server.set_log(NS, "single", "kube-flannel", "one\ntwo\nthree\n")
    server.set_log(NS, "single", "kube-flannel", "crashed\n", previous=True)
    server.set_log(NS, "multi", "sidecar", "side\n")

    assert core.read_namespaced_pod_log("single", NS) == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("single", NS, tail_lines=2) == "two\nthree\n"
    assert core.read_namespaced_pod_log("single", NS, previous=True) == "crashed\n"
    assert core.read_namespaced_pod_log("multi", NS, container="sidecar") == "side\n"
    assert core.read_namespaced_pod_log("multi", NS, container="kube-flannel") == ""

    with pytest.raises(client.ApiException) as unnamed:
        core.read_namespaced_pod_log("multi", NS)
    assert unnamed.value.status == 400
    assert status_of(unnamed.value)["message"] == (
        "a container name must be specified for pod multi, choose one of: [kube-flannel sidecar]"
    )
    with pytest.raises(client.ApiException) as wrong:
        core.read_namespaced_pod_log("multi", NS, container="nope")
    assert status_of(wrong.value)["message"] == "container nope is not valid for pod multi"
    with pytest.raises(client.ApiException) as no_previous:
        core.read_namespaced_pod_log("multi", NS, container="sidecar", previous=True)
    assert no_previous.value.status == 400
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod_log("ghost", NS)
    assert missing.value.status == 404
    assert status_of(missing.value)["message"] == 'pods "ghost" not found'


# --- watch ---------------------------------------------------------------------------------------


def test_watch_from_resource_version_with_selector(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod("in", {"app": "flannel"}))
    core.create_namespaced_pod(NS, pod("out", {"app": "other"}))
    core.patch_namespaced_pod("in", NS, {"metadata": {"annotations": {"a": "1"}}})
    core.patch_namespaced_pod("out", NS, {"metadata": {"labels": {"app": "flannel"}}})  # enters
    core.patch_namespaced_pod("in", NS, {"metadata": {"labels": {"app": "gone"}}})  # leaves
    core.delete_namespaced_pod("out", NS)

    began = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_pod,
            NS,
            label_selector="app=flannel",
            resource_version=start,
            timeout_seconds=1,
        )
    ]
    elapsed = time.monotonic() - began
    assert events == [
        ("ADDED", "in"),
        ("MODIFIED", "in"),
        ("ADDED", "out"),
        ("DELETED", "in"),
        ("DELETED", "out"),
    ]
    assert 0.8 < elapsed < 3, "the stream must end when timeoutSeconds elapses"


def test_watch_without_resource_version_lists_then_streams(
    server: ApiServer, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, pod("old-w1", node="w1"))
    core.create_namespaced_pod(NS, pod("old-w2", node="w2"))

    def later() -> None:
        server.create(pod("new-w2", node="w2"), namespace=NS)
        server.create(pod("new-w1", node="w1"), namespace=NS)

    timer = threading.Timer(0.2, later)
    timer.start()
    seen: list[tuple[str, str]] = []
    stream = watch.Watch()
    for e in stream.stream(
        core.list_namespaced_pod, NS, field_selector="spec.nodeName=w1", timeout_seconds=5
    ):
        seen.append((e["type"], e["object"].metadata.name))
        if len(seen) == 2:
            stream.stop()
    timer.join()
    assert seen == [("ADDED", "old-w1"), ("ADDED", "new-w1")]


# --- authorization -------------------------------------------------------------------------------


def test_restricted_token_gets_real_forbidden_messages(
    server: ApiServer, connect: Callable[..., client.ApiClient], core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, pod("ds-a", node="w1"))
    core.create_namespaced_pod(NS, pod("ds-b", node="w2"))
    server.set_log(NS, "ds-a", "main", "hello\n")
    bot = client.CoreV1Api(connect(token=BOT_TOKEN, context="flannel-bot"))

    with pytest.raises(client.ApiException) as listing:
        bot.list_namespaced_pod(NS)
    assert listing.value.status == 403 and listing.value.reason == "Forbidden"
    body = status_of(listing.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'pods is forbidden: User "system:serviceaccount:kube-flannel:flannel-bot" cannot list '
        'resource "pods" in API group "" in the namespace "kube-flannel"'
    )
    with pytest.raises(client.ApiException) as everywhere:
        bot.list_pod_for_all_namespaces()
    assert status_of(everywhere.value)["message"].endswith(
        'cannot list resource "pods" in API group "" at the cluster scope'
    )
    with pytest.raises(client.ApiException) as other_pod:
        bot.delete_namespaced_pod("ds-b", NS)
    assert status_of(other_pod.value)["message"] == (
        f'pods "ds-b" is forbidden: User "{BOT_USER}" cannot delete resource "pods" in API group '
        '"" in the namespace "kube-flannel"'
    )
    apps = client.AppsV1Api(connect(token=BOT_TOKEN, context="flannel-bot"))
    with pytest.raises(client.ApiException) as ds:
        apps.list_namespaced_daemon_set(NS)
    assert status_of(ds.value)["message"].startswith("daemonsets.apps is forbidden:")
    assert 'in API group "apps"' in status_of(ds.value)["message"]

    assert bot.list_node().items == []
    assert bot.read_namespaced_pod_log("ds-a", NS) == "hello\n"
    assert bot.delete_namespaced_pod("ds-a", NS).metadata.name == "ds-a"

    authz = client.AuthorizationV1Api(connect(token=BOT_TOKEN, context="flannel-bot"))

    def can(verb: str, resource: str, name: str | None = None, sub: str | None = None) -> bool:
        attrs = client.V1ResourceAttributes(
            verb=verb, resource=resource, namespace=NS, name=name, subresource=sub
        )
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
        )
        return bool(authz.create_self_subject_access_review(review).status.allowed)

    assert can("list", "pods") is False
    assert can("get", "pods", "ds-a", sub="log") is True
    assert can("delete", "pods", "ds-a") is True
    assert can("delete", "pods", "ds-b") is False
    assert can("watch", "nodes") is True
    admin = client.AuthorizationV1Api(connect())
    review = {"spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": NS}}}
    assert admin.create_self_subject_access_review(review).status.allowed is True


# --- hooks ---------------------------------------------------------------------------------------


def test_on_delete_hook_replaces_daemonset_pods(
    server: ApiServer, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ds = apps.create_namespaced_daemon_set(NS, daemonset())
    owner = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "name": ds.metadata.name,
        "uid": ds.metadata.uid,
        "controller": True,
    }
    core.create_namespaced_pod(
        NS, pod("kube-flannel-ds-abcde", {"app": "flannel"}, node="w2", owner=owner)
    )
    changes: list[tuple[str, str]] = []
    server.on_change(lambda verb, obj: changes.append((verb, obj["metadata"]["name"])))

    @server.on_delete
    def recreate(verb: str, obj: dict[str, Any]) -> None:
        owners = obj["metadata"].get("ownerReferences") or []
        if obj["kind"] == "Pod" and any(o["kind"] == "DaemonSet" for o in owners):
            replacement = pod(
                "", obj["metadata"]["labels"], node=obj["spec"]["nodeName"], owner=owners[0]
            )
            replacement["metadata"]["generateName"] = f"{owners[0]['name']}-"
            server.create(replacement, namespace=obj["metadata"]["namespace"])

    core.delete_namespaced_pod("kube-flannel-ds-abcde", NS)
    pods = core.list_namespaced_pod(NS, label_selector="app=flannel").items
    assert len(pods) == 1
    new = pods[0]
    assert (
        new.metadata.name.startswith("kube-flannel-ds-")
        and new.metadata.name != "kube-flannel-ds-abcde"
    )
    assert new.spec.node_name == "w2" and new.metadata.owner_references[0].uid == ds.metadata.uid
    assert changes == [("delete", "kube-flannel-ds-abcde"), ("create", new.metadata.name)]


def test_in_process_api_shares_the_store_with_http(
    server: ApiServer, core: client.CoreV1Api
) -> None:
    created = server.create(pod("p1", {"app": "flannel"}, node="w1"), namespace=NS)
    assert core.read_namespaced_pod("p1", NS).metadata.uid == created["metadata"]["uid"]
    running = server.patch(
        "pods", "p1", {"status": {"phase": "Running"}}, namespace=NS, subresource="status"
    )
    assert running["status"]["phase"] == "Running"
    assert [
        p["metadata"]["name"] for p in server.list("po", NS, "app=flannel", "status.phase=Running")
    ] == ["p1"]
    assert server.list("pods", NS, field_selector="status.phase!=Running") == []

    core.patch_namespaced_pod("p1", NS, {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(StatusError) as stale:
        server.replace(running)  # running carries the resourceVersion before the HTTP patch
    assert stale.value.code == 409 and stale.value.reason == "Conflict"
    assert server.get("pod", "p1", NS)["metadata"]["labels"] == {"app": "flannel", "x": "1"}
    assert server.delete("pods", "p1", NS)["metadata"]["name"] == "p1"
    assert core.list_namespaced_pod(NS).items == []


# --- discovery and kubeconfig --------------------------------------------------------------------


def get_json(server: ApiServer, path: str) -> Any:
    with urllib.request.urlopen(server.url + path, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


def test_version_and_discovery(server: ApiServer, connect: Callable[..., client.ApiClient]) -> None:
    for path in ("/version", "/version/"):
        version = get_json(server, path)
        assert version["gitVersion"].startswith("v1.30.") and version["major"] == "1"
    assert get_json(server, "/api")["versions"] == ["v1"]
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(urllib.request.Request(server.url + "/version", b"{}"), timeout=5)
    assert post.value.code == 405 and json.loads(post.value.read())["reason"] == "MethodNotAllowed"

    core = {r["name"]: r for r in get_json(server, "/api/v1")["resources"]}
    assert core["pods"]["namespaced"] is True and core["pods"]["kind"] == "Pod"
    assert set(core["pods"]["verbs"]) >= {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    }
    assert core["nodes"]["namespaced"] is False
    assert core["pods/log"]["verbs"] == ["get"]
    assert core["pods/status"]["verbs"] == ["get", "patch", "update"]

    groups = {g["name"]: g for g in get_json(server, "/apis")["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "coordination.k8s.io"} <= set(groups)
    assert groups["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    apps = {r["name"]: r for r in get_json(server, "/apis/apps/v1")["resources"]}
    assert apps["daemonsets"]["kind"] == "DaemonSet" and apps["daemonsets"]["shortNames"] == ["ds"]
    leases = get_json(server, "/apis/coordination.k8s.io/v1")["resources"]
    assert [(r["name"], r["namespaced"]) for r in leases] == [("leases", True)]

    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url + "/apis/batch/v1/jobs", timeout=5)
    assert missing.value.code == 404 and json.loads(missing.value.read())["kind"] == "Status"

    # the official client's discovery models validate these documents too
    api = connect()
    assert client.VersionApi(api).get_code().git_version.startswith("v1.30.")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    assert "apps" in [g.name for g in client.ApisApi(api).get_api_versions().groups]
    assert (
        client.RbacAuthorizationV1Api(api).get_api_resources().group_version
        == "rbac.authorization.k8s.io/v1"
    )


def test_rbac_and_leases_round_trip(connect: Callable[..., client.ApiClient]) -> None:
    api = connect()
    rbac = client.RbacAuthorizationV1Api(api)
    role = {
        "metadata": {"name": "flannel"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    rbac.create_cluster_role(role)
    binding = {
        "metadata": {"name": "flannel"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "flannel",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": NS}],
    }
    rbac.create_cluster_role_binding(binding)
    assert names(rbac.list_cluster_role().items) == ["flannel"]
    assert rbac.read_cluster_role_binding("flannel").role_ref.name == "flannel"
    rbac.create_namespaced_role(NS, {"metadata": {"name": "r"}, "rules": []})
    assert names(rbac.list_namespaced_role(NS).items) == ["r"]

    leases = client.CoordinationV1Api(api)
    lease = leases.create_namespaced_lease(
        "kube-node-lease", {"metadata": {"name": "w1"}, "spec": {"holderIdentity": "w1"}}
    )
    lease.spec.lease_duration_seconds = 40
    assert (
        leases.replace_namespaced_lease("w1", "kube-node-lease", lease).spec.lease_duration_seconds
        == 40
    )


def test_kubeconfig_is_private(server: ApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "kubeconfig", token="secret", context="lab")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["current-context"] == "lab"
    assert data["clusters"][0]["cluster"]["server"] == server.url
    assert data["users"][0]["user"] == {"token": "secret"}
