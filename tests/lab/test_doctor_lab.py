"""`flannel-bot doctor` against the lab: all in place, then a node whose host key changed, then
credentials without the permissions the runbooks need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flannel_bot.lab.apiserver import PolicyRule
from flannel_bot.lab.lab import Lab

from . import rbac

pytestmark = pytest.mark.integration
FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")


def doctor(config: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK")}
    env |= {"FLANNEL_BOT_CONFIG": str(config), "FLANNEL_BOT_DB": str(tmp_path / "bot.db")}
    return subprocess.run(
        [FLANNEL_BOT, *extra, "doctor"], env=env, capture_output=True, text=True, timeout=120
    )


def test_doctor_finds_everything_in_place(flannel_lab: Lab, tmp_path: Path) -> None:
    kubeconfig = flannel_lab.api.write_kubeconfig(
        tmp_path / "kubeconfig", token=rbac.TOKEN, context="flannel-bot-sa"
    )
    flannel_lab.api.authorizer.grant(rbac.TOKEN, rbac.granted_rules(), rbac.USER)
    done = doctor(
        flannel_lab.bot_config,
        tmp_path,
        "--kubeconfig",
        str(kubeconfig),
        "--context",
        "flannel-bot-sa",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "OK   cluster: 3 nodes via http://127.0.0.1:" in out
    assert "OK   permissions: 8 API permissions checked" in out
    assert all(f"OK   ssh {n}: reachable" in out for n in ("w1", "w2", "w3"))
    assert "WARN slack: not configured" in out


def test_doctor_names_a_changed_host_key_and_missing_permissions(
    flannel_lab: Lab, tmp_path: Path
) -> None:
    assert flannel_lab.files is not None
    lines = flannel_lab.files.known_hosts.read_text().splitlines()
    w1_key = lines[0].split()[1:]
    w2_name = lines[1].split()[0]  # the lab files keys under node names
    assert w2_name == "w2"
    tampered = tmp_path / "known_hosts"
    tampered.write_text("\n".join([lines[0], " ".join([w2_name, *w1_key]), *lines[2:]]) + "\n")
    config = tmp_path / "flannel-bot.toml"
    config.write_text(
        flannel_lab.bot_config.read_text().replace(
            str(flannel_lab.files.known_hosts), str(tampered)
        )
    )
    flannel_lab.api.authorizer.grant(
        "read-only-token",
        [PolicyRule(verbs=("get", "list"), resources=("nodes", "pods"))],
        "system:serviceaccount:flannel-bot:readonly",
    )
    kubeconfig = flannel_lab.api.write_kubeconfig(
        tmp_path / "kubeconfig", token="read-only-token", context="ro"
    )
    done = doctor(config, tmp_path, "--kubeconfig", str(kubeconfig), "--context", "ro")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "OK   ssh w1" in out and "OK   ssh w3" in out
    assert "FAIL ssh w2:" in out and "host key" in out
    assert "FAIL permissions: the bot may not" in out and "delete pods in kube-flannel" in out
    assert "apply deploy/base/rbac.yaml" in out
