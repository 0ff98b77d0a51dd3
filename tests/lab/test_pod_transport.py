"""`[nodes] access = "pod"` on the lab, through the real CLI: a node runbook over node-exec pods
(run by the lab's kubelet in the node's own namespaces) with the shipped RBAC, plans naming the
transport, and doctor. (A bot killed with SIGKILL while its pods exist, whose leftovers the next
start deletes by label: tests/lab/test_bot_on_lab.py.)

(Diagnose over pods against diagnose over SSH is in test_diagnose_lab.py, every scenario.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_bot.executors.kube.nodepods import LEFTOVER_SELECTOR
from flannel_bot.lab.lab import Lab
from tests.lab import rbac

pytestmark = pytest.mark.integration

FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")
NODE = "w2"


def node_exec_pods(lab: Lab) -> list[str]:
    return [p["metadata"]["name"] for p in lab.api.list("pods", label_selector=LEFTOVER_SELECTOR)]


@pytest.fixture
def pod_config(flannel_lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """The lab's bot config reaching nodes through pods, its own audit log; no pod left after."""
    config = tmp_path / "flannel-bot.toml"
    text = flannel_lab.bot_config.read_text()
    text = text.replace(str(flannel_lab.spec.dir / "flannel-bot.db"), str(tmp_path / "bot.db"))
    config.write_text(f'{text}\n[nodes]\naccess = "pod"\nstart_timeout = 20\n')
    yield config
    assert node_exec_pods(flannel_lab) == [], "node-exec pods left behind"


def cli_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNEL_BOT_")}
    return {**env, "FLANNEL_BOT_CONFIG": str(config), "HOME": "/root"}


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLANNEL_BOT, "--user", "alice", *args],
        env=cli_env(config),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_node_check_runs_over_pods_with_the_shipped_rbac(
    flannel_lab: Lab, pod_config: Path, tmp_path: Path
) -> None:
    """node.check's reads run on the node through one pod each, as the ServiceAccount the
    shipped manifests make: every call allowed, pods created only in the bot's namespace."""
    flannel_lab.api.authorizer.grant(rbac.TOKEN, rbac.granted_rules(), rbac.USER)
    kubeconfig = flannel_lab.api.write_kubeconfig(
        tmp_path / "sa-kubeconfig", token=rbac.TOKEN, context="flannel-bot-sa"
    )
    created: list[tuple[str, str]] = []
    flannel_lab.api.on_change(
        lambda verb, obj: (
            created.append((obj["metadata"]["namespace"], obj["spec"]["nodeName"]))
            if verb == "create" and obj.get("kind") == "Pod" and "node-exec" in str(obj["metadata"])
            else None
        )
    )
    proc = cli(
        pod_config,
        "--kubeconfig",
        str(kubeconfig),
        "--context",
        "flannel-bot-sa",
        "--json",
        "run",
        "node.check",
        f"node={NODE}",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    reply = json.loads(proc.stdout)
    assert reply["ok"], reply
    assert created and set(created) == {("flannel-bot", NODE)}
    decisions = [d for d in flannel_lab.api.authorizer.decisions if d[0] == rbac.TOKEN]
    denied = sorted({(a.verb, a.resource, a.namespace) for _, a, i in decisions if i is None})
    assert denied == []
    assert ("create", "pods", "flannel-bot") in {
        (a.verb, a.resource, a.namespace) for _, a, i in decisions
    }


def test_a_plan_names_the_pod_transport(pod_config: Path) -> None:
    proc = cli(pod_config, "plan", "node.check", f"node={NODE}")
    assert proc.returncode == 0, proc.stderr
    assert "Node actions run via pod" in proc.stdout
    assert f"node {NODE} (via pod) -- " in proc.stdout


def test_doctor_checks_the_pod_rights_and_runs_a_pod_on_each_node(
    flannel_lab: Lab, pod_config: Path, tmp_path: Path
) -> None:
    flannel_lab.api.authorizer.grant(rbac.TOKEN, rbac.granted_rules(), rbac.USER)
    kubeconfig = flannel_lab.api.write_kubeconfig(
        tmp_path / "sa-kubeconfig", token=rbac.TOKEN, context="flannel-bot-sa"
    )
    args = ("--kubeconfig", str(kubeconfig), "--context", "flannel-bot-sa", "doctor")
    out = cli(pod_config, *args).stdout
    assert "OK   permissions:" in out, out
    for node in ("w1", "w2", "w3"):
        assert f"OK   pod {node}: a node-exec pod ran on it" in out, out
    assert "ssh w1" not in out
    limited = [r for r in rbac.granted_rules() if "pods/log" not in r.resources]
    flannel_lab.api.authorizer.grant("no-logs", limited, rbac.USER)
    kubeconfig = flannel_lab.api.write_kubeconfig(
        tmp_path / "no-logs", token="no-logs", context="flannel-bot-sa"
    )
    out = cli(pod_config, "--kubeconfig", str(kubeconfig), "--context", "flannel-bot-sa", "doctor")
    assert "FAIL permissions:" in out.stdout and "get pods/log in flannel-bot" in out.stdout
