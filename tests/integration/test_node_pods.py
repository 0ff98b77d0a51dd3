"""`PodNodeExecutor` against the lab API server over HTTP, its pods run by the lab kubelet.

The kubelet runs `flannel-bot node` for real in the namespaces of the process it is told holds
the node's: here this test process (never PID 1), so the commands see the test's own network.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.diagnosis.collect import probe_nodes
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.rules.cluster import node_unreachable
from flannel_bot.errors import (
    ApiUnreachable,
    CommandTimeout,
    NodePodImagePull,
    NodePodNodeMissing,
    NodePodNotStarted,
    NodePodRefused,
    NodePodUnschedulable,
)
from flannel_bot.executors.kube import KubeClient, KubeSettings
from flannel_bot.executors.kube.nodepods import (
    LABEL_CLUSTER,
    Owner,
    PodNodeExecutor,
    pod_labels,
)
from flannel_bot.executors.node_settings import DEFAULT_IMAGE, NodeSettings
from flannel_bot.lab.apiserver import ApiServer, write_kubeconfig
from flannel_bot.lab.kubelet import Kubelet, NodeRuntime
from flannel_bot.ports.clock import SystemClock
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_executors, node_pods

pytestmark = pytest.mark.integration

NS = "flannel-bot"
IMAGE = "ghcr.io/flannel-bot/flannel-bot:test"
LIMITED = "limited-token"
LIMITED_RULES: list[dict[str, Any]] = [  # everything the pod transport needs, but pods create
    {"verbs": ["get", "list", "delete"], "apiGroups": [""], "resources": ["pods"]},
    {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log", "nodes"]},
]
UP = ("w1", "w2")  # nodes whose kubelet runs; "down" is in the cluster but its kubelet is not
UNSCHEDULABLE = "tainted"


@pytest.fixture(scope="module")
def holder() -> Iterator[int]:
    """A process in this test's namespaces, standing for the nodes' namespace holders."""
    proc = subprocess.Popen(["sleep", "3600"])
    assert proc.pid != 1
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(holder: int) -> Iterator[ApiServer]:
    def runtime(name: str) -> NodeRuntime | None:
        if name in UP:
            return NodeRuntime(holder, "127.0.0.1")
        if name == "down":
            return NodeRuntime(None, "127.0.0.1")
        return None

    with ApiServer(
        rules={LIMITED: LIMITED_RULES}, users={LIMITED: "system:serviceaccount:x:y"}
    ) as srv:
        srv.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        for name in (*UP, "down", UNSCHEDULABLE):
            srv.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})

        @srv.on_change
        def refuse_on_tainted(verb: str, obj: dict[str, Any]) -> None:
            # what the node's admission answers for a pod it will not take
            if verb != "create" or obj.get("kind") != "Pod":
                return
            if (obj.get("spec") or {}).get("nodeName") != UNSCHEDULABLE:
                return
            status = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 node(s) had untolerated taint",
                    }
                ],
            }
            meta = obj["metadata"]
            threading.Thread(
                target=srv.patch,
                args=("pods", meta["name"], {"status": status}, meta["namespace"], "merge"),
                kwargs={"subresource": "status"},
            ).start()

        kubelet = Kubelet(srv, runtime, poll_interval=0.1).start()
        try:
            yield srv
        finally:
            kubelet.stop()


def client(server: ApiServer, tmp_path: Path, token: str | None = None) -> KubeClient:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    return KubeClient.from_settings(KubeSettings(kubeconfig=kubeconfig))


def executor(
    kube: KubeClient, image: str = IMAGE, start_timeout: float = 20, cluster: str = "lab"
) -> PodNodeExecutor:
    settings = NodeSettings(access="pod", namespace=NS, image=image, start_timeout=start_timeout)
    return PodNodeExecutor(kube, settings, cluster, poll_interval=0.1)


def pods_left(server: ApiServer) -> list[str]:
    return [p["metadata"]["name"] for p in server.list("pods", namespace=NS)]


def test_runs_each_nodes_commands_in_one_pod_and_deletes_it(
    server: ApiServer, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []
    server.on_change(lambda verb, obj: seen.append(obj) if verb == "create" else None)
    pods = executor(client(server, tmp_path))
    out = pods.run_many(
        {
            "w1": [["echo", "a;b $(id)"], ["sh", "-c", "exit 3"]],
            "w2": [["readlink", "/proc/self/ns/net"]],
        },
        timeout=20,
    )
    w1, w2 = out["w1"], out["w2"]
    assert not isinstance(w1, Exception) and not isinstance(w2, Exception), out
    assert [(r.argv, r.exit_code, r.stdout) for r in w1] == [
        (("echo", "a;b $(id)"), 0, "a;b $(id)\n"),
        (("sh", "-c", "exit 3"), 3, ""),
    ]
    assert w2[0].stdout.strip() == os.readlink(f"/proc/{os.getpid()}/ns/net")
    created = [o for o in seen if o.get("kind") == "Pod"]
    assert sorted(o["spec"]["nodeName"] for o in created) == ["w1", "w2"]  # one pod per node
    assert all(o["spec"]["hostNetwork"] and o["spec"]["hostPID"] for o in created)
    assert pods_left(server) == []


def test_run_each_gives_each_node_as_its_pod_reports(server: ApiServer, tmp_path: Path) -> None:
    """Diagnose reduces each node's answers as they come: a slow node must not hold the others'
    answers back, and a node is given while the slow one's pod still runs."""
    pods = executor(client(server, tmp_path))
    answers = pods.run_each({"w1": [["sleep", "3"]], "w2": [["echo", "quick"]]}, timeout=20)
    first, result = next(answers)
    assert first == "w2" and not isinstance(result, Exception), result
    assert result[0].stdout == "quick\n"
    assert [n for n in pods_left(server) if "-w1-" in n], "w1's pod should still be running"
    rest = list(answers)
    assert [n for n, _ in rest] == ["w1"] and not isinstance(rest[0][1], Exception)
    assert pods_left(server) == []


def test_a_timed_out_command_is_an_error_and_its_pod_is_deleted(
    server: ApiServer, tmp_path: Path
) -> None:
    pods = executor(client(server, tmp_path))
    out = pods.run_many({"w1": [["sleep", "30"]]}, timeout=1)
    assert isinstance(out["w1"], CommandTimeout), out
    assert pods_left(server) == []


def test_a_node_whose_kubelet_is_down_is_not_started_in_time(
    server: ApiServer, tmp_path: Path
) -> None:
    pods = executor(client(server, tmp_path), start_timeout=1)
    out = pods.run_many({"down": [["true"]], "w1": [["true"]]}, timeout=20)
    assert isinstance(out["down"], NodePodNotStarted), out
    assert "did not start within 1s" in str(out["down"])
    assert not isinstance(out["w1"], Exception)  # the other node still answers
    assert pods_left(server) == []


def test_a_node_not_in_the_cluster_is_named(server: ApiServer, tmp_path: Path) -> None:
    pods = executor(client(server, tmp_path), start_timeout=0.5)
    with pytest.raises(NodePodNodeMissing, match="not in the cluster"):
        pods.run("w9", ["true"], timeout=5)
    assert pods_left(server) == []


def test_an_image_the_node_cannot_pull_is_named(server: ApiServer, tmp_path: Path) -> None:
    pods = executor(client(server, tmp_path), image="registry.example/other:1")
    with pytest.raises(NodePodImagePull, match=r"could not pull image registry\.example/other:1"):
        pods.run("w1", ["true"], timeout=5)
    assert pods_left(server) == []


def test_an_unschedulable_pod_is_named_with_the_reason(server: ApiServer, tmp_path: Path) -> None:
    pods = executor(client(server, tmp_path))
    with pytest.raises(NodePodUnschedulable, match="untolerated taint"):
        pods.run(UNSCHEDULABLE, ["true"], timeout=5)
    assert pods_left(server) == []


def test_rbac_refusing_pods_create_says_which_rule(server: ApiServer, tmp_path: Path) -> None:
    pods = executor(client(server, tmp_path, token=LIMITED))
    with pytest.raises(NodePodRefused, match='needs verb "create" on resource "pods"') as err:
        pods.run("w1", ["true"], timeout=5)
    assert err.value.reason == "Forbidden"


def test_leftovers_of_this_cluster_are_deleted_by_label(server: ApiServer, tmp_path: Path) -> None:
    def leftover(name: str, cluster: str) -> None:
        server.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": pod_labels("down", cluster)},
                "spec": {"nodeName": "down", "containers": [{"name": "node", "image": IMAGE}]},
            }
        )

    leftover("flannel-bot-node-down-aaaaa", "lab")
    leftover("flannel-bot-node-down-bbbbb", "other")
    pods = executor(client(server, tmp_path))
    assert pods.cleanup_leftovers() == ["flannel-bot-node-down-aaaaa"]
    left = server.list("pods", namespace=NS)
    assert [p["metadata"]["labels"][LABEL_CLUSTER] for p in left] == ["other"]
    server.delete("pods", "flannel-bot-node-down-bbbbb", NS)


def test_cleanup_spares_the_pods_of_a_live_run_beside_it(server: ApiServer, tmp_path: Path) -> None:
    """A `flannel-bot diagnose` exec'd beside a serving bot builds its own executor: it must not
    delete the pods the serving process is waiting for, only those of a process that is gone."""
    here = Owner.current()
    running = subprocess.Popen(["sleep", "60"])
    finished = subprocess.Popen(["true"])
    finished.wait()
    try:
        for name, pid in (
            ("flannel-bot-node-w1-alive", running.pid),
            ("flannel-bot-node-w1-dead", finished.pid),
        ):
            labels = pod_labels("w1", "lab") | Owner(here.host, pid).labels(time.time() + 600)
            server.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": NS, "labels": labels},
                    "spec": {"nodeName": "down", "containers": [{"name": "node", "image": IMAGE}]},
                }
            )
        assert executor(client(server, tmp_path)).cleanup_leftovers() == [
            "flannel-bot-node-w1-dead"
        ]
        assert pods_left(server) == ["flannel-bot-node-w1-alive"]
    finally:
        running.kill()
        running.wait()
        server.delete("pods", "flannel-bot-node-w1-alive", NS)


def test_image_self_is_the_image_the_bots_own_pod_runs(server: ApiServer, tmp_path: Path) -> None:
    """A mirrored image (kustomize `images:`, a Helm tag) must reach the node-exec pods without
    being written twice: in a cluster `[nodes] image` defaults to the bot's own pod's image."""
    mirrored = "registry.example.net/mirror/flannel-bot:0.1.0-patched"
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "flannel-bot-5d9f7-x2x4q", "namespace": NS},
            "spec": {
                "nodeName": "w1",
                "containers": [
                    {"name": "sidecar", "image": "busybox"},
                    {"name": "flannel-bot", "image": mirrored},
                ],
            },
        }
    )
    try:
        kube = client(server, tmp_path)
        cluster = dataclasses.replace(
            load_settings(None, env={}).cluster(),
            nodes=NodeSettings(access="pod", namespace=NS, image="self"),
        )
        env = {"POD_NAME": "flannel-bot-5d9f7-x2x4q"}
        assert node_pods(kube, cluster, env).settings.image == mirrored
        # not in a pod the API knows: the release's image, with a warning
        assert node_pods(kube, cluster, {"POD_NAME": "gone"}).settings.image == DEFAULT_IMAGE
    finally:
        server.delete("pods", "flannel-bot-5d9f7-x2x4q", NS)


def test_diagnosis_shows_a_pod_that_could_not_start_as_the_nodes_evidence(
    server: ApiServer, tmp_path: Path
) -> None:
    pods = executor(client(server, tmp_path), start_timeout=1)
    ev = Evidence()
    probe_nodes(pods, ["w1", "down"], ev, timeout=20)
    assert "w1" in ev.probes and "down" not in ev.probes
    found = list(node_unreachable(ev))
    assert [f.nodes for f in found] == [("down",)]
    line = found[0].evidence[0]
    assert line.source == "down: pod" and "did not start within 1s" in line.text
    assert "node-exec pod" in found[0].fix.manual
    assert pods_left(server) == []


def test_api_server_setting_reaches_the_server_when_the_configured_address_does_not(
    server: ApiServer, tmp_path: Path
) -> None:
    """`api_server`: the real endpoint beside the Service IP kube-proxy carries (here a
    kubeconfig naming a dead address); the pod transport needs only that API."""
    dead = write_kubeconfig(tmp_path / "dead", "http://127.0.0.1:9")
    config = tmp_path / "c.toml"
    config.write_text(
        f'kubeconfig = "{dead}"\napi_server = "{server.url}"\n[nodes]\naccess = "pod"\n'
    )
    cluster = load_settings(config, env={}).cluster()
    assert cluster.api_server == server.url
    kube, nodes = build_executors(cluster, SystemClock())
    assert isinstance(kube, KubeClient) and isinstance(nodes, PodNodeExecutor)
    assert "w1" in [n.name for n in kube.list_nodes()]
    without = KubeClient.from_settings(KubeSettings(kubeconfig=dead, request_timeout=2))
    with pytest.raises(ApiUnreachable):
        without.list_nodes()
