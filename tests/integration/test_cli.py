"""The non-interactive CLI, run as a real subprocess against a real SQLite file."""

from __future__ import annotations

import json
import sqlite3

import pytest

from flannel_bot.runs.registry import Registry
from tests.integration.conftest import REPO, BotEnv

pytestmark = pytest.mark.integration


def test_runbooks_lists_versions_and_risk(env: BotEnv) -> None:
    out = env.cli("runbooks", check=True).stdout
    assert "flannel.restart-pods@1.1.0" in out and "flannel.restart-pods@1.0.0" in out
    assert "[DESTRUCTIVE]" in out and "(default)" in out
    registry = Registry.from_package()
    for rb in registry.all():
        line = next(x for x in out.splitlines() if x.startswith(f"{rb.ref} "))
        assert f"{rb.risk.marker}" in line and rb.summary in line, line


def test_help_lists_every_runbook_with_version_risk_and_summary(env: BotEnv) -> None:
    out = env.cli("help", check=True).stdout
    registry = Registry.from_package()
    for rb in registry.newest():
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{rb.id} "))
        assert str(rb.version) in line and rb.risk.marker in line and rb.summary in line, line
    assert "node.check" in out and "[read]" in out


def test_plan_shows_steps_with_risk_markers(env: BotEnv) -> None:
    out = env.cli("plan", "flannel.restart-pods@1.1.0", "nodes=w2", check=True).stdout
    assert "1. [read]" in out and "2. [DESTRUCTIVE]" in out
    assert "DELETE /api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-x7v5t  (on w2)" in out
    data = json.loads(
        env.cli("plan", "flannel.restart-pods@1.1.0", "nodes=w2", "--json", check=True).stdout
    )
    assert data["kind"] == "plan" and data["plan_hash"].startswith("sha256:")
    assert [s["risk"] for s in data["steps"]] == ["read", "destructive"]


def test_run_waits_refuses_self_approval_and_proceeds_after_approval(env: BotEnv) -> None:
    started = json.loads(
        env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", "--json", check=True).stdout
    )
    assert started["status"] == "awaiting_approval" and started["id"] == 1
    self_approval = env.cli("approve", "1", user="alice")
    assert self_approval.returncode == 1
    assert "alice requested this run and cannot approve it" in self_approval.stdout
    approved = env.cli("approve", "1", f"plan={started['short_hash']}", user="bob")
    assert approved.returncode == 0, approved.stderr
    assert "SUCCEEDED" in approved.stdout
    assert "[run 1] approved by @bob (1/1)" in approved.stderr  # live progress
    assert "check new_pods_ready: passed" in approved.stderr
    assert env.cli("audit", "verify", check=True).stdout.startswith("audit chain OK")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "flannel.nope", "nodes=w2"], "there is no runbook `flannel.nope`"),
        (["run", "flannel.restart-pods@7.0.0", "nodes=w2"], "has no version 7.0.0"),
        (["run", "flannel.restart-pods@1.1.0"], "needs `nodes=<node[,node...]>`"),
        (["run", "flannel.restart-pods"], "name the nodes (nodes=w1,w2) or all=true"),
        (["run", "flannel.restart-pods@1.1.0", "nodes=w2;reboot"], "is not a valid node name"),
        (["run", "flannel.restart-pods@1.1.0", "nodes=$(reboot)"], "is not a valid node name"),
        (
            ["run", "flannel.restart-pods@1.1.0", "nodes=w9"],
            "node `w9` is not in the cluster; known nodes: master, w1, w2, w3",
        ),
        (
            ["run", "flannel.restart-pods@1.1.0", "nodes=w2", "color=red"],
            "has no parameter `color`",
        ),
        (["approve", "42"], "there is no run 42"),
        (["status", "42"], "there is no run 42"),
        (["approve", "x"], "`x` is not a run number"),
        (["frobnicate"], "unknown command `frobnicate`"),
    ],
)
def test_malformed_input_gets_one_sentence_and_is_audited(
    env: BotEnv, args: list[str], message: str
) -> None:
    proc = env.cli(*args)
    assert proc.returncode in (1, 2)
    first = proc.stdout.splitlines()[0]
    assert first.startswith("error: ") and message in first, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    rejected = env.events("command_rejected")
    assert len(rejected) == 1 and message in rejected[0]["data"]["error"]
    assert rejected[0]["actor"] == "alice"
    assert env.cli("audit", "verify").returncode == 0


def test_every_command_is_audited(env: BotEnv) -> None:
    env.cli("help", check=True)
    env.cli("status", check=True)
    env.cli("diagnose", "w2", check=True)
    assert [e["data"]["text"] for e in env.events("command")] == ["help", "status", "diagnose w2"]


def test_diagnose_points_at_the_broken_node(env: BotEnv) -> None:
    out = env.cli("diagnose", check=True).stdout
    assert "1. [CRITICAL] flannel-crashloop on w2" in out
    assert "fix: /flannel run flannel.restart-pods nodes=w2" in out
    assert "no node access" in out  # a recording has no nodes to probe, and says so


@pytest.mark.parametrize(
    ("tampering", "expected"),
    [
        (["UPDATE events SET actor = 'bob' WHERE id = 2"], "BROKEN at event 2: altered"),
        (["DELETE FROM events WHERE id = 3"], "BROKEN at event 3: deleted"),
        (["DELETE FROM events WHERE id = (SELECT MAX(id) FROM events)"], ": deleted"),
        (
            [
                "INSERT INTO events SELECT id + 100, ts, 'approved', run_id, 'bob', source, data, "
                "hash, hash FROM events WHERE id = (SELECT MAX(id) FROM events)"
            ],
            ": inserted",
        ),
    ],
)
def test_audit_verify_fails_and_names_the_tampered_event(
    env: BotEnv, tampering: list[str], expected: str
) -> None:
    env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True)
    assert env.cli("audit", "verify").returncode == 0
    conn = sqlite3.connect(env.db)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    for sql in tampering:
        conn.execute(sql)
    conn.commit()
    conn.close()
    proc = env.cli("audit", "verify")
    assert proc.returncode == 1
    assert "audit chain BROKEN at event" in proc.stdout and expected in proc.stdout


def test_deny_and_cancel_through_the_cli(env: BotEnv) -> None:
    env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True)
    out = env.cli("deny", "1", "wait", "for", "the", "release", user="bob", check=True).stdout
    assert "DENIED" in out
    env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True)
    assert "CANCELLED" in env.cli("cancel", "2", check=True).stdout
    assert env.events("denied")[0]["data"]["reason"] == "wait for the release"


def test_diagnose_a_support_bundle_names_the_cause(env: BotEnv) -> None:
    dump = str(REPO / "examples" / "dump")
    text = env.cli("diagnose", "--dump", dump, check=True).stdout
    assert "1. [CRITICAL] br-netfilter-missing on w2" in text
    assert "Failed to check br_netfilter" in text
    data = json.loads(env.cli("diagnose", "--dump", dump, "w2", "--json", check=True).stdout)
    assert data["source"].startswith("bundle ")
    assert [f["id"] for f in data["findings"]][:2] == [
        "br-netfilter-missing",
        "ip-forward-disabled",
    ]
    assert data["findings"][0]["nodes"] == ["w2"]
    assert any("No such file or directory" in e["text"] for e in data["findings"][0]["evidence"])
