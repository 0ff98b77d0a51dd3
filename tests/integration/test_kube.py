"""The Kubernetes executor against the lab's API server over real HTTP, built from a kubeconfig
exactly as production builds it, so selectors, errors and RBAC answers are the server's own."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.errors import (
    ApiError,
    ApiForbidden,
    ApiUnreachable,
    ExecutorError,
    KubeConfigError,
    NotFound,
)
from flannel_bot.executors.kube import KubeClient, KubeSettings, describe_pod
from flannel_bot.executors.kube import client as kube_client
from flannel_bot.lab import objects
from flannel_bot.lab.apiserver import ApiServer, write_kubeconfig
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.cluster import (
    ContainerInfo,
    DaemonSetInfo,
    KubeExecutor,
    NodeCondition,
    PodInfo,
)
from tests.fakes import FakeClock
from tests.polling import PollTimeout, newest_ready, poll

pytestmark = pytest.mark.integration

NS = objects.FLANNEL_NS
SPEC = LabSpec(name="kt", nodes=3)
W1, W2, W3 = SPEC.all_nodes()
BOT_TOKEN = "bot-token"
BOT_USER = "system:serviceaccount:kube-flannel:flannel-bot"
BOT_RULES: list[dict[str, Any]] = [
    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["nodes"]},
    {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
]


def flannel_pod_name(node: str) -> str:
    return f"{objects.FLANNEL_DS}-{objects.suffix(SPEC.name, node)}"


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    with ApiServer(rules={BOT_TOKEN: BOT_RULES}, users={BOT_TOKEN: BOT_USER}) as srv:
        srv.create(objects.namespace(NS))
        for n in SPEC.all_nodes():
            srv.create(objects.node(n, ready=n.name != "w3"))
            srv.create(objects.flannel_pod(SPEC, n, flannel_pod_name(n.name), ready=n.name != "w3"))
            srv.create(objects.workload_pod(n, 0))
        srv.create(objects.flannel_daemonset(SPEC.nodes))
        srv.create(objects.flannel_configmap())
        for obj in objects.kube_proxy_objects(SPEC) + objects.kubernetes_service(SPEC):
            srv.create(obj)
        crashing = flannel_pod_name(W3.name)
        srv.create(objects.event(NS, "Pod", crashing, "BackOff", "Back-off restarting", host="w3"))
        srv.create(objects.event(NS, "Pod", flannel_pod_name(W1.name), "Started", "ok", "Normal"))
        srv.create(objects.event("default", "Node", "w3", "NodeNotReady", "Node w3 is not ready"))
        yield srv


@pytest.fixture(scope="module")
def kubeconfig(server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    return server.write_kubeconfig(path, context="lab-admin")


@pytest.fixture(scope="module")
def kube(kubeconfig: Path) -> Iterator[KubeClient]:
    with KubeClient.from_settings(KubeSettings(kubeconfig, context="lab-admin")) as executor:
        yield executor


@pytest.fixture(scope="module")
def restricted(server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeClient]:
    path = tmp_path_factory.mktemp("kube") / "bot-config"
    server.write_kubeconfig(path, token=BOT_TOKEN, context="bot")
    with KubeClient.from_settings(KubeSettings(kubeconfig=path)) as executor:
        yield executor


def pod(name: str, node: str, labels: dict[str, str], ready: bool = False) -> dict[str, Any]:
    n = SPEC.by_name(node)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": objects.meta(name, NS, labels=labels),
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox:1.36"}]},
        "status": objects.pod_status(n, ready, 0, host_network=False, pod_ip=n.pod_ip(9)),
    }
    body["status"]["containerStatuses"] = [
        objects.container_status("main", "busybox:1.36", ready, 0, waiting=None if ready else "X")
    ]
    if not ready:
        body["status"]["phase"] = "Pending"
    return body


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    """Plays the kubelet or a controller: changes status while the test polls."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --- construction --------------------------------------------------------------------------------


def test_is_a_kube_executor(kube: KubeClient, server: ApiServer) -> None:
    executor: KubeExecutor = kube
    assert executor is kube and kube.server == server.url


def test_missing_kubeconfig_or_context_is_a_clear_error(kubeconfig: Path, tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"kubeconfig .*nope\.yaml does not exist"):
        KubeClient.from_settings(KubeSettings(kubeconfig=tmp_path / "nope.yaml"))
    with pytest.raises(KubeConfigError) as info:
        KubeClient.from_settings(KubeSettings(kubeconfig=kubeconfig, context="prod"))
    assert str(kubeconfig) in str(info.value) and "'prod'" in str(info.value)


def test_in_cluster_outside_a_pod_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match=r"in-cluster .*Service host/port is not set"):
        KubeClient.from_settings(KubeSettings(in_cluster=True))


# --- reads ---------------------------------------------------------------------------------------


def test_list_nodes(kube: KubeClient) -> None:
    nodes = {n.name: n for n in kube.list_nodes()}
    assert sorted(nodes) == ["w1", "w2", "w3"]
    w1 = nodes["w1"]
    assert (w1.internal_ip, w1.pod_cidr, w1.pod_cidrs) == (
        W1.underlay_ip,
        W1.pod_cidr,
        (W1.pod_cidr,),
    )
    assert w1.ready and w1.ready_reason == "KubeletReady"
    assert w1.annotations["flannel.alpha.coreos.com/public-ip"] == W1.underlay_ip
    assert w1.labels["kubernetes.io/hostname"] == "w1"
    w3 = nodes["w3"]
    assert not w3.ready and w3.ready_reason == "KubeletNotReady"
    network = next(c for c in w3.conditions if c.type == "NetworkUnavailable")
    assert network[:3] == ("NetworkUnavailable", "True", "NoRouteCreated")
    assert isinstance(network, NodeCondition)
    assert [n.name for n in kube.list_nodes(label_selector="kubernetes.io/hostname=w2")] == ["w2"]
    assert kube.get_node("w2").internal_ip == W2.underlay_ip


def test_list_pods_with_label_and_node_selectors(kube: KubeClient) -> None:
    flannel = kube.list_pods(NS, label_selector="app=flannel")
    assert {p.node for p in flannel} >= {"w1", "w2", "w3"}
    assert all(p.labels["app"] == "flannel" for p in flannel)

    on_w2 = kube.list_pods(NS, "app=flannel", node="w2")
    assert [p.name for p in on_w2] == [flannel_pod_name("w2")]
    p = on_w2[0]
    assert (p.owner_kind, p.owner_name, p.host_network) == ("DaemonSet", objects.FLANNEL_DS, True)
    assert (p.pod_ip, p.host_ip, p.phase, p.ready) == (
        W2.underlay_ip,
        W2.underlay_ip,
        "Running",
        True,
    )
    assert [c.name for c in p.containers] == ["install-cni-plugin", "install-cni", "kube-flannel"]
    assert p.containers[0].init and p.containers[0].reason == "Completed"
    assert p.creation and not p.deletion and p.uid

    assert kube.list_pods(NS, "app=web") == []  # the web pods live in default
    assert kube.list_pods(NS, "app=flannel", node="w9") == []


def test_crash_looping_pod_shows_container_state(kube: KubeClient) -> None:
    (p,) = kube.list_pods(NS, "app=flannel", node="w3")
    assert not p.ready
    main = p.containers[-1]
    assert main == ContainerInfo(
        name="kube-flannel",
        image=objects.FLANNEL_IMAGE,
        ready=False,
        restart_count=0,
        state="waiting",
        reason="CrashLoopBackOff",
        message=main.message,
        last_reason="Error",
        last_exit_code=1,
    )


def test_list_pods_all_namespaces(kube: KubeClient) -> None:
    pods = kube.list_pods()
    namespaces = {p.namespace for p in pods}
    assert {NS, "default", "kube-system"} <= namespaces
    web = kube.list_pods(None, "app=web", node="w1")
    assert [(p.namespace, p.name, p.pod_ip) for p in web] == [("default", "web-w1-0", W1.pod_ip(0))]


def test_long_lists_are_read_in_chunks(kube: KubeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = kube.list_pods()
    monkeypatch.setattr(kube_client, "_LIST_CHUNK", 2)
    assert kube.list_pods() == everything and len(everything) > 2


def test_pod_log_current_previous_and_container(kube: KubeClient, server: ApiServer) -> None:
    name = flannel_pod_name("w1")
    server.set_log(NS, name, "kube-flannel", "line 1\nline 2\nline 3\n")
    server.set_log(NS, name, "kube-flannel", "panic: boom\n", previous=True)
    server.set_log(NS, name, "install-cni", "copied\n")
    assert kube.read_pod_log(NS, name) == "line 1\nline 2\nline 3\n"
    assert kube.read_pod_log(NS, name, tail_lines=1) == "line 3\n"
    assert kube.read_pod_log(NS, name, "kube-flannel", previous=True) == "panic: boom\n"
    assert kube.read_pod_log(NS, name, container="install-cni") == "copied\n"
    with pytest.raises(
        ApiError, match=r"previous=true.*400 BadRequest.*previous terminated"
    ) as info:
        kube.read_pod_log(NS, flannel_pod_name("w2"), previous=True)
    assert info.value.code == 400
    with pytest.raises(NotFound, match=r"^GET /api/v1/namespaces/kube-flannel/pods/gone/log"):
        kube.read_pod_log(NS, "gone")


def test_configmap_get_and_patch(kube: KubeClient) -> None:
    cm = kube.get_configmap(NS, "kube-flannel-cfg")
    assert set(cm.data) == {"cni-conf.json", "net-conf.json"} and cm.labels["app"] == "flannel"
    kube.patch_configmap(NS, "kube-flannel-cfg", {"net-conf.json": '{"Network": "10.245.0.0/16"}'})
    after = kube.get_configmap(NS, "kube-flannel-cfg")
    assert after.data["net-conf.json"] == '{"Network": "10.245.0.0/16"}'
    assert after.data["cni-conf.json"] == cm.data["cni-conf.json"]
    assert after.resource_version != cm.resource_version
    with pytest.raises(NotFound) as info:
        kube.get_configmap(NS, "nope")
    assert str(info.value) == "GET /api/v1/namespaces/kube-flannel/configmaps/nope: not found"
    with pytest.raises(NotFound, match=r"^PATCH /api/v1/namespaces/kube-flannel/configmaps/nope"):
        kube.patch_configmap(NS, "nope", {"a": "b"})


def test_list_daemonsets_with_selectors(kube: KubeClient) -> None:
    everywhere = {(d.namespace, d.name) for d in kube.list_daemonsets()}
    assert {(NS, objects.FLANNEL_DS), ("kube-system", "kube-proxy")} <= everywhere
    (proxy,) = kube.list_daemonsets(label_selector="k8s-app=kube-proxy")
    assert proxy.name == "kube-proxy" and proxy.container_commands["kube-proxy"][0].endswith(
        "kube-proxy"
    )
    (ds,) = kube.list_daemonsets(NS)
    assert ds.container_args["kube-flannel"] == ("--ip-masq", "--kube-subnet-mgr")
    assert ds.images["kube-flannel"] == objects.FLANNEL_IMAGE
    assert (ds.desired, ds.ready, ds.generation, ds.observed_generation) == (3, 3, 1, 1)
    assert ds.selector == {"app": "flannel", "k8s-app": "flannel"} and ds.rolled_out
    assert kube.list_daemonsets(NS, "app=nothing") == []


def test_list_events_with_field_selectors(kube: KubeClient) -> None:
    crashing = flannel_pod_name("w3")
    (backoff,) = kube.list_events(NS, f"involvedObject.name={crashing}")
    assert (backoff.involved_kind, backoff.reason, backoff.type) == ("Pod", "BackOff", "Warning")
    assert (backoff.source_component, backoff.source_host, backoff.count) == ("kubelet", "w3", 1)
    assert backoff.last_timestamp
    assert {e.reason for e in kube.list_events(NS)} == {"BackOff", "Started"}
    assert [e.reason for e in kube.list_events(NS, "type=Warning")] == ["BackOff"]
    nodes = kube.list_events(field_selector="involvedObject.kind=Node")
    assert [(e.namespace, e.involved_name, e.reason) for e in nodes] == [
        ("default", "w3", "NodeNotReady")
    ]


def test_get_service(kube: KubeClient) -> None:
    svc = kube.get_service("default", "kubernetes")
    assert (svc.type, svc.cluster_ip, svc.cluster_ips) == ("ClusterIP", "10.96.0.1", ("10.96.0.1",))
    (port,) = svc.ports
    assert (port.name, port.port, port.target_port, port.protocol) == ("https", 443, "6443", "TCP")
    with pytest.raises(NotFound, match=r"^GET /api/v1/namespaces/default/services/nope: not found"):
        kube.get_service("default", "nope")


# --- writes --------------------------------------------------------------------------------------


def test_delete_pod_then_not_found(kube: KubeClient, server: ApiServer) -> None:
    server.create(pod("doomed", "w1", {"app": "doomed"}, ready=True))
    assert kube.delete_pod(NS, "doomed") is None  # type: ignore[func-returns-value]
    assert kube.list_pods(NS, "app=doomed") == []
    with pytest.raises(NotFound) as info:
        kube.delete_pod(NS, "doomed")
    assert str(info.value) == "DELETE /api/v1/namespaces/kube-flannel/pods/doomed: not found"


def test_empty_name_never_reaches_the_collection(kube: KubeClient) -> None:
    with pytest.raises(ValueError, match="invalid name"):
        kube.delete_pod(NS, "")


def test_patch_daemonset_then_the_rollout_is_seen(kube: KubeClient, server: ApiServer) -> None:
    ds = objects.flannel_daemonset(SPEC.nodes)
    ds["metadata"]["name"] = "rollout-ds"
    server.create(ds)
    patched = kube.patch_daemonset(
        NS,
        "rollout-ds",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "kube-flannel", "args": ["-v"]}]}}
            }
        },
    )
    assert patched.container_args["kube-flannel"] == ("-v",)
    assert patched.images["kube-flannel"] == objects.FLANNEL_IMAGE  # merged by name, not replaced
    assert patched.generation == 2 and not patched.rolled_out

    def controller() -> None:
        status = {**objects.daemonset_status(3, 3), "observedGeneration": 2}
        server.patch("daemonsets", "rollout-ds", {"status": status}, NS, "merge", "status")

    thread = later(0.2, controller)
    done = poll(lambda: kube.get_daemonset(NS, "rollout-ds"), lambda d: d.rolled_out, timeout=5)
    thread.join()
    assert done.observed_generation == 2 and done.rolled_out


def test_a_stuck_rollout_reads_as_not_rolled_out(kubeconfig: Path, server: ApiServer) -> None:
    clock = FakeClock()
    start = clock.now()
    ds = objects.flannel_daemonset(SPEC.nodes)
    ds["metadata"]["name"] = "stuck-ds"
    ds["status"] = objects.daemonset_status(3, 1)
    server.create(ds)
    reads: list[DaemonSetInfo] = []
    with KubeClient.from_settings(KubeSettings(kubeconfig, context="lab-admin")) as kube:

        def read() -> DaemonSetInfo:
            reads.append(kube.get_daemonset(NS, "stuck-ds"))
            return reads[-1]

        with pytest.raises(PollTimeout) as info:
            poll(read, lambda d: d.rolled_out, timeout=600, interval=30, clock=clock)
    last = info.value.last_seen
    assert isinstance(last, DaemonSetInfo) and not last.rolled_out
    assert (last.desired, last.updated, last.ready, last.available) == (3, 3, 1, 1)
    assert (last.generation, last.observed_generation) == (1, 1)
    assert len(reads) == 21  # at once, then every 30s of the injected clock
    assert clock.now() - start == timedelta(seconds=600)


# --- a replaced pod, seen through list_pods ------------------------------------------------------


def test_listing_pods_sees_the_replacement_become_ready(
    kube: KubeClient, server: ApiServer
) -> None:
    labels = {"app": "waiter"}
    server.create(pod("waiter-old", "w2", labels, ready=True))
    server.create(pod("waiter-new", "w2", labels, ready=False))
    server.create(pod("waiter-elsewhere", "w1", labels, ready=True))

    def kubelet() -> None:
        status = objects.pod_status(W2, True, 0, host_network=False, pod_ip=W2.pod_ip(9))
        server.patch("pods", "waiter-new", {"status": status}, NS, "merge", "status")

    excluded = frozenset({"waiter-old"})
    thread = later(0.3, kubelet)
    started = time.monotonic()
    pods = poll(
        lambda: kube.list_pods(NS, "app=waiter", "w2"),
        lambda pods: newest_ready(pods, excluded) is not None,
        timeout=5,
    )
    thread.join()
    ready = newest_ready(pods, excluded)
    assert isinstance(ready, PodInfo)
    assert (ready.name, ready.node, ready.ready) == ("waiter-new", "w2", True)
    assert {p.name for p in pods} == {"waiter-old", "waiter-new"}  # not the one on w1
    assert 0.25 < time.monotonic() - started < 3


def test_a_pod_that_never_becomes_ready_is_described_as_it_was_last_seen(
    kube: KubeClient, server: ApiServer
) -> None:
    server.create(pod("never-ready", "w3", {"app": "never"}, ready=False))
    started = time.monotonic()
    with pytest.raises(PollTimeout) as info:
        poll(
            lambda: kube.list_pods(NS, "app=never", "w3"),
            lambda pods: newest_ready(pods) is not None,
            timeout=0.3,
        )
    assert 0.3 <= time.monotonic() - started < 2
    last = info.value.last_seen
    assert isinstance(last, list) and [p.name for p in last] == ["never-ready"]
    assert describe_pod(last[0]) == "never-ready (Pending, not Ready, node w3; main waiting X)"
    assert describe_pod(last[0], frozenset({"never-ready"})).endswith(
        "(Pending, not Ready, excluded, node w3; main waiting X)"
    )
    assert kube.list_pods(NS, "app=absent") == []


# --- errors --------------------------------------------------------------------------------------


def test_forbidden_names_verb_resource_namespace_and_user(restricted: KubeClient) -> None:
    assert {n.name for n in restricted.list_nodes()} == {"w1", "w2", "w3"}
    with pytest.raises(ApiForbidden) as info:
        restricted.list_pods(NS, "app=flannel")
    err = info.value
    message = str(err)
    assert message.startswith(
        "GET /api/v1/namespaces/kube-flannel/pods?labelSelector=app=flannel: "
    )
    assert "the bot's ServiceAccount may not list pods in namespace kube-flannel" in message
    assert 'needs verb "list" on resource "pods" in API group ""' in message
    assert f'User "{BOT_USER}" cannot list resource "pods"' in message
    assert (err.verb, err.resource, err.namespace, err.user, err.code) == (
        "list",
        "pods",
        NS,
        BOT_USER,
        403,
    )
    with pytest.raises(ApiForbidden, match=r"may not list daemonsets across all namespaces"):
        restricted.list_daemonsets()
    with pytest.raises(ApiForbidden, match=r'API group "apps"'):
        restricted.list_daemonsets()
    with pytest.raises(ApiForbidden, match=r'may not delete pods "x" in namespace kube-flannel'):
        restricted.delete_pod(NS, "x")


def test_can_i(kube: KubeClient, restricted: KubeClient) -> None:
    assert kube.can_i("delete", "pods", NS)
    assert restricted.can_i("list", "nodes")
    assert restricted.can_i("get", "pods/log", NS)
    assert not restricted.can_i("list", "pods", NS)
    assert not restricted.can_i("delete", "pods", NS)
    assert not restricted.can_i("patch", "daemonsets", NS, group="apps")


def test_unreachable_server_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    path = write_kubeconfig(tmp_path / "config", url)
    started = time.monotonic()
    with KubeClient.from_settings(KubeSettings(kubeconfig=path, request_timeout=2)) as kube:
        with pytest.raises(ApiUnreachable) as info:
            kube.list_nodes()
        with pytest.raises(ApiUnreachable, match=r"^DELETE /api/v1/namespaces/kube-flannel/pods/x"):
            kube.delete_pod(NS, "x")
    assert time.monotonic() - started < 5
    assert info.value.server == url
    assert str(info.value).startswith(
        f"GET /api/v1/nodes: cannot reach the Kubernetes API server at {url}"
    )
    assert "Connection refused" in str(info.value)
    assert isinstance(info.value, ExecutorError)
