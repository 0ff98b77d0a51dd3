"""The lab's kubelet runs flannel-bot's node-exec pods the way a node would: in the bound node's
namespaces, the output served as the container log over HTTP, the exit status and phase in the
pod's status; it refuses pods it cannot run as asked, enforces activeDeadlineSeconds, leaves a
pod bound to a downed node Pending and kills a pod's command when the pod is deleted."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from flannel_bot.diagnosis.collect import collect_api, peer_reducer
from flannel_bot.diagnosis.peer_tables import TABLE_ARGVS
from flannel_bot.errors import NodePodRefused
from flannel_bot.executors.kube.nodepods import PodNodeExecutor
from flannel_bot.executors.ssh import SshExecutor
from flannel_bot.lab.lab import BOT_NAMESPACE, Lab
from flannel_bot.ports.clock import SystemClock
from flannel_bot.ports.nodes import DigestResult
from flannel_bot.ports.probes import ProbeOutput
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_executors
from tests.lab.conftest import bot_config, node_exec_pods
from tests.polling import poll

pytestmark = pytest.mark.integration
NS = BOT_NAMESPACE
IMAGE = "ghcr.io/flannel-bot/flannel-bot:0.0.0-lab"
_made = iter(range(10_000))


def node_pod(
    node: str,
    commands: list[list[str]],
    timeout: float = 20,
    deadline: int = 60,
    **spec: Any,
) -> dict[str, Any]:
    """A pod as the contract (notes/pod-contract.md) has PodNodeExecutor make it."""
    container = {
        "name": "node",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"privileged": True},
        "command": ["flannel-bot", "node"],
        "args": [
            "--host-pid",
            "1",
            "--timeout",
            str(timeout),
            "--commands",
            json.dumps(commands),
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    }
    container.update(spec.pop("container", {}))
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"flannel-bot-node-{node}-t{next(_made):04d}",
            "labels": {
                "app.kubernetes.io/name": "flannel-bot",
                "app.kubernetes.io/component": "node-exec",
                "app.kubernetes.io/managed-by": "flannel-bot",
                "flannel-bot.io/node": node,
            },
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "hostPID": True,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "activeDeadlineSeconds": deadline,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [container],
        },
    }
    body["spec"].update(spec)
    return body


@pytest.fixture
def core(flannel_lab: Lab) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(config_file=str(flannel_lab.kubeconfig))
    yield client.CoreV1Api(api)
    api.close()


def create(core: client.CoreV1Api, body: dict[str, Any]) -> str:
    name = str(core.create_namespaced_pod(NS, body).metadata.name)
    return name


def finished(core: client.CoreV1Api, name: str, timeout: float = 30) -> Any:
    return poll(
        lambda: core.read_namespaced_pod(name, NS),
        lambda pod: pod.status.phase in ("Succeeded", "Failed"),
        timeout=timeout,
    )


def processes_running(word: str) -> list[str]:
    """Command lines on the VM holding `word` (a pod's command and all it started)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if word.encode() in cmdline:
            found.append(b" ".join(cmdline).decode(errors="replace"))
    return found


def result_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def status_message(exc: client.ApiException) -> str:
    return str(json.loads(exc.body)["message"])


def test_a_pod_runs_in_its_node_namespaces_and_its_log_is_served(
    flannel_lab: Lab, core: client.CoreV1Api, ssh: SshExecutor
) -> None:
    argv = [["ip", "-o", "addr", "show", "cni0"], ["cat", "/run/flannel/subnet.env"]]
    name = create(core, node_pod("w2", argv))
    pod = finished(core, name)
    assert pod.status.phase == "Succeeded"
    state = pod.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (0, "Completed")
    assert pod.status.start_time is not None
    assert pod.status.host_ip == flannel_lab.spec.by_name("w2").underlay_ip
    lines = result_lines(core.read_namespaced_pod_log(name, NS, container="node"))
    assert lines[-1] == {"done": True, "commands": 2}
    over_ssh = [ssh.run("w2", a, 10) for a in argv]
    assert [(line["exit_code"], line["stdout"]) for line in lines[:2]] == [
        (r.exit_code, r.stdout) for r in over_ssh
    ]
    assert "FLANNEL_SUBNET=10.244.2.1/24" in lines[1]["stdout"]
    core.delete_namespaced_pod(name, NS)


def test_a_failing_command_fails_the_pod_with_its_exit_code(core: client.CoreV1Api) -> None:
    body = node_pod("w1", [["true"]])
    body["spec"]["containers"][0]["args"][-1] = "not json"
    name = create(core, body)
    pod = finished(core, name)
    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (2, "Error")
    log = core.read_namespaced_pod_log(name, NS, container="node")
    assert "--commands is not valid JSON" in log
    core.delete_namespaced_pod(name, NS)


def test_a_pod_outside_the_host_namespaces_is_refused(
    flannel_lab: Lab, core: client.CoreV1Api, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    body = node_pod(
        "w1",
        [["touch", str(marker)]],
        hostPID=False,
        container={"securityContext": {"privileged": False}},
    )
    name = create(core, body)
    pod = finished(core, name)
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "PodAdmissionRejected"
    assert "hostPID=false" in pod.status.message
    assert 'container "node" must set securityContext.privileged=true' in pod.status.message
    assert "hostNetwork" not in pod.status.message
    assert not marker.exists()
    core.delete_namespaced_pod(name, NS)


def test_only_flannel_bots_image_and_command_run(core: client.CoreV1Api) -> None:
    other_image = create(core, node_pod("w1", [["true"]], container={"image": "busybox:1.36"}))
    pod = poll(
        lambda: core.read_namespaced_pod(other_image, NS),
        lambda pod: bool(pod.status.container_statuses),
        timeout=30,
    )
    assert pod.status.phase == "Pending"
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason == "ErrImagePull"
    assert "runs only flannel-bot's image" in waiting.message
    with pytest.raises(client.ApiException) as no_log:
        core.read_namespaced_pod_log(other_image, NS, container="node")
    assert no_log.value.status == 400
    assert status_message(no_log.value) == (
        f'container "node" in pod "{other_image}" is waiting to start: image can\'t be pulled'
    )
    shell = create(core, node_pod("w1", [["true"]], container={"command": ["sh", "-c"]}))
    pod = finished(core, shell)
    assert pod.status.phase == "Failed"
    state = pod.status.container_statuses[0].state.terminated
    assert state.reason == "StartError" and "runs only flannel-bot's image" in state.message
    for name in (other_image, shell):
        core.delete_namespaced_pod(name, NS)


def test_active_deadline_kills_the_pod(flannel_lab: Lab, core: client.CoreV1Api) -> None:
    name = create(core, node_pod("w3", [["sleep", "30.1"]], timeout=60, deadline=1))
    pod = finished(core, name, timeout=20)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    state = pod.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (137, "Error")
    assert flannel_lab.pods.running() == []
    assert processes_running("30.1") == []  # nsenter's child too, in a session of its own
    core.delete_namespaced_pod(name, NS)


def test_a_pod_bound_to_a_downed_node_stays_pending_until_it_is_back(
    flannel_lab: Lab, core: client.CoreV1Api
) -> None:
    flannel_lab.kubelet_stopped.add("w3")  # what a stopped k3s (its kubelet) leaves
    try:
        name = create(core, node_pod("w3", [["true"]]))
        with pytest.raises(AssertionError):  # PollTimeout: nothing accepts it
            finished(core, name, timeout=2)
        pod = core.read_namespaced_pod(name, NS)
        assert pod.status.phase == "Pending" and pod.status.start_time is None
        with pytest.raises(client.ApiException) as no_log:
            core.read_namespaced_pod_log(name, NS, container="node")
        assert no_log.value.status == 400
        assert "is waiting to start: ContainerCreating" in status_message(no_log.value)
    finally:
        flannel_lab.kubelet_stopped.discard("w3")
    assert finished(core, name).status.phase == "Succeeded"
    core.delete_namespaced_pod(name, NS)


def test_deleting_a_running_pod_kills_its_command(flannel_lab: Lab, core: client.CoreV1Api) -> None:
    name = create(core, node_pod("w1", [["sleep", "30.2"]], timeout=60))
    poll(lambda: processes_running("30.2"), lambda found: len(found) == 2, timeout=20)
    assert f"{NS}/{name}" in flannel_lab.pods.running()
    core.delete_namespaced_pod(name, NS)
    poll(flannel_lab.pods.running, lambda running: running == [], timeout=10)
    assert processes_running("30.2") == []  # nsenter and sleep, in a session of their own
    pods = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=node-exec")
    assert [p.metadata.name for p in pods.items] == []


def test_a_namespace_enforcing_pod_security_refuses_the_pod_at_create(
    flannel_lab: Lab, core: client.CoreV1Api
) -> None:
    """PodSecurity admission: kube-apiserver's 403, and the executor's error says what to do."""
    namespace = "psa-baseline"
    labels = {"pod-security.kubernetes.io/enforce": "baseline"}
    core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    try:
        body = node_pod("w1", [["true"]])
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(namespace, body)
        assert refused.value.status == 403
        assert status_message(refused.value) == (
            f'pods "{body["metadata"]["name"]}" is forbidden: violates PodSecurity '
            '"baseline:latest": host namespaces (hostNetwork=true, hostPID=true), privileged '
            '(container "node" must not set securityContext.privileged=true)'
        )
        settings = load_settings(
            bot_config(flannel_lab, "pod", flannel_lab.spec.dir),
            env={"HOME": "/root"},
        )
        cluster = dataclasses.replace(
            settings.cluster(),
            nodes=dataclasses.replace(settings.cluster().nodes, namespace=namespace),
        )
        _, nodes = build_executors(cluster, SystemClock())
        outcome = nodes.run_many({"w1": [["true"]]}, 10)["w1"]
        assert isinstance(outcome, NodePodRefused), outcome
        assert "PodSecurity" in str(outcome) and "enforce=privileged" in str(outcome)
        assert core.list_namespaced_pod(namespace).items == []
    finally:
        core.delete_namespace(namespace)


def test_node_pods_send_their_peer_tables_as_digests_that_hold(
    flannel_lab: Lab, tmp_path: Path
) -> None:
    """On the healthy lab, each node's route, neighbour and FDB tables come back from its pod
    as digests (not the tables), each what the peers' Node annotations say, and reduced to the
    same as the whole tables read over SSH."""
    settings = load_settings(bot_config(flannel_lab, "pod", tmp_path), env={"HOME": "/root"})
    kube, pods = build_executors(settings.cluster(), SystemClock())
    over_ssh = load_settings(flannel_lab.bot_config, env={"HOME": "/root"})
    _, ssh = build_executors(over_ssh.cluster(), SystemClock())
    reducer = peer_reducer(collect_api(kube, ()))
    assert reducer is not None and isinstance(pods, PodNodeExecutor)
    names = ["w1", "w2", "w3"]
    tables = {n: [list(argv) for argv in TABLE_ARGVS] for n in names}
    digested = dict(pods.run_each(tables, 30, digest=TABLE_ARGVS))
    whole = ssh.run_many(tables, 30)
    assert node_exec_pods(flannel_lab) == []
    for node in names:
        results, texts = digested[node], whole[node]
        assert not isinstance(results, Exception) and not isinstance(texts, Exception)
        for probe_id, result, text in zip(TABLE_ARGVS.values(), results, texts, strict=True):
            assert isinstance(result, DigestResult), result
            table = reducer.from_digest(probe_id, node, result)
            assert table is not None, (node, probe_id, result)
            assert len(result.stdout) < len(text.stdout) or probe_id == "ip-route"
            exact = reducer.reduce(probe_id, ProbeOutput(text.exit_code, text.stdout, text.stderr))
            assert exact is not None
            assert (table.entries, table.missing) == (exact.entries, exact.missing)
            assert json.loads(table.out.stdout) == json.loads(exact.out.stdout)
