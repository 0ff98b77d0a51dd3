"""Both executors and the whole bot against the lab, wired exactly as production wires them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flannel_bot.executors.kube import KubeClient
from flannel_bot.lab.lab import Lab
from flannel_bot.ports.clock import SystemClock
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_executors
from tests.lab.conftest import bot_config, node_exec_pods
from tests.polling import newest_ready, poll

pytestmark = pytest.mark.integration
FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")


@pytest.fixture
def executors(flannel_lab: Lab) -> tuple[KubeClient, object]:
    settings = load_settings(flannel_lab.bot_config, env={"HOME": "/root"})
    kube, nodes = build_executors(settings.cluster(), SystemClock())
    assert isinstance(kube, KubeClient)
    return kube, nodes


def test_kube_executor_reads_the_lab(
    flannel_lab: Lab, executors: tuple[KubeClient, object]
) -> None:
    kube, _ = executors
    nodes = {n.name: n for n in kube.list_nodes()}
    assert set(nodes) == {"w1", "w2", "w3"}
    assert nodes["w2"].pod_cidr == "10.244.2.0/24"
    assert nodes["w2"].internal_ip == flannel_lab.spec.by_name("w2").underlay_ip
    pods = kube.list_pods("kube-flannel", "app=flannel", "w2")
    assert [p.node for p in pods] == ["w2"]
    log = kube.read_pod_log("kube-flannel", pods[0].name, container="kube-flannel")
    assert "Wrote subnet file to /run/flannel/subnet.env" in log


def test_deleted_flannel_pod_is_recreated_and_becomes_ready(
    executors: tuple[KubeClient, object],
) -> None:
    kube, _ = executors
    old = kube.list_pods("kube-flannel", "app=flannel", "w3")[0]
    kube.delete_pod("kube-flannel", old.name)
    excluded = frozenset({old.name})
    pods = poll(
        lambda: kube.list_pods("kube-flannel", "app=flannel", "w3"),
        lambda pods: newest_ready(pods, excluded) is not None,
        timeout=30,
        interval=1,
    )
    new = newest_ready(pods, excluded)
    assert new is not None and new.name != old.name and new.node == "w3"


def test_ssh_executor_resolves_nodes_through_the_api(executors: tuple[KubeClient, object]) -> None:
    _, nodes = executors
    result = nodes.run("w1", ["cat", "/run/flannel/subnet.env"], 10)  # type: ignore[attr-defined]
    assert "FLANNEL_SUBNET=10.244.1.1/24" in result.stdout


def test_the_bot_restarts_flannel_on_the_lab_with_approval(
    flannel_lab: Lab, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "FLANNEL_BOT_CONFIG": str(flannel_lab.bot_config),
        "FLANNEL_BOT_DB": str(tmp_path / "bot.db"),
    }

    def bot(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLANNEL_BOT, "--user", user, *args],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
        )

    before = {p["metadata"]["name"] for p in flannel_lab.api.list("pods", "kube-flannel")}
    diagnose = bot("alice", "diagnose", "w2")
    assert diagnose.returncode == 0 and "w2" in diagnose.stdout, diagnose.stderr
    # flannel is healthy on w2, so only force=true restarts it
    assert "SUCCEEDED" in bot("alice", "run", "flannel.restart-pods", "nodes=w2").stdout
    started = bot("alice", "run", "flannel.restart-pods", "nodes=w2", "force=true")
    assert "AWAITING_APPROVAL" in started.stdout, started.stdout + started.stderr
    approved = bot("bob", "approve", "2")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "SUCCEEDED" in approved.stdout
    assert "check replacements_ready: passed" in approved.stderr
    after = {p["metadata"]["name"] for p in flannel_lab.api.list("pods", "kube-flannel")}
    assert len(after - before) == 1
    assert bot("alice", "audit", "verify").returncode == 0


def test_node_exec_pods_a_killed_bot_left_are_gone_after_its_next_start(
    flannel_lab: Lab, tmp_path: Path
) -> None:
    """SIGKILL leaves no `finally` to run: the bot's next start deletes what it left."""
    env = {
        **os.environ,
        "FLANNEL_BOT_CONFIG": str(bot_config(flannel_lab, "pod", tmp_path)),
        "FLANNEL_BOT_DB": str(tmp_path / "bot.db"),
    }
    argv = [FLANNEL_BOT, "--user", "alice", "diagnose"]
    # w3's kubelet is down, so its pod waits (start_timeout) and is surely there at the kill
    flannel_lab.kubelet_stopped.add("w3")
    try:
        bot = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll(
                lambda: node_exec_pods(flannel_lab),
                lambda pods: any("-w3-" in p for p in pods),
                timeout=60,
            )
        finally:
            bot.send_signal(signal.SIGKILL)
            bot.wait(timeout=10)
        left = node_exec_pods(flannel_lab)
        assert any("-w3-" in p for p in left), left
    finally:
        flannel_lab.kubelet_stopped.discard("w3")
    again = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deleted node-exec pods a previous run left" in again.stderr, again.stderr
    assert node_exec_pods(flannel_lab) == []
