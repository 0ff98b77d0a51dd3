"""`flannel-bot node`, run for real as a subprocess, as a node-exec pod runs it.

FLANNEL_BOT_HOST_PID points at this test process, so nsenter enters the namespaces the test
already runs in (root may setns into its own namespaces); never PID 1's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.executors.nodeside import TIMEOUT_EXIT, nsenter_argv, parse_commands
from flannel_bot.ports.peer_digest import digest_table

ROOT = Path(__file__).resolve().parents[2]


def node(
    *args: str, host_pid: int | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    pid = host_pid if host_pid is not None else os.getpid()
    assert pid != 1, "a test never enters PID 1's namespaces"
    env = {**os.environ, "FLANNEL_BOT_HOST_PID": str(pid)}
    return subprocess.run(
        [sys.executable, "-m", "flannel_bot.cli", "node", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_runs_each_argv_without_a_shell_and_ends_with_done() -> None:
    commands = [["echo", "a;b $(id)"], ["sh", "-c", "echo err >&2; exit 3"], ["true"]]
    proc = node("--timeout", "20", "--commands", json.dumps(commands))
    assert proc.returncode == 0, proc.stderr
    got = lines(proc.stdout)
    assert [g["argv"] for g in got[:3]] == commands
    assert got[0]["stdout"] == "a;b $(id)\n"  # a word stays a word: no shell ran it
    assert (got[1]["exit_code"], got[1]["stderr"]) == (3, "err\n")
    assert got[2]["exit_code"] == 0
    assert all(g["truncated"] is False and g["duration_s"] >= 0 for g in got[:3])
    assert got[-1] == {"done": True, "commands": 3}


def test_enters_the_target_process_namespaces() -> None:
    """The command sees the target's network namespace: here the test's own."""
    proc = node("--timeout", "20", "--commands", json.dumps([["readlink", "/proc/self/ns/net"]]))
    assert proc.returncode == 0, proc.stderr
    assert lines(proc.stdout)[0]["stdout"].strip() == os.readlink(f"/proc/{os.getpid()}/ns/net")


@pytest.mark.parametrize(
    ("commands", "why"),
    [
        ("[[", "not valid JSON"),
        ('{"argv": ["true"]}', "must be a JSON list"),
        ('["true"]', "argv must be a list"),
        ("[[]]", "non-empty list"),
        ('[["echo", 3]]', "must be a string"),
        (json.dumps([["echo", "a\0b"]]), "NUL"),
    ],
)
def test_refuses_bad_commands_before_running_anything(commands: str, why: str) -> None:
    proc = node("--timeout", "5", "--commands", commands)
    assert proc.returncode == 2
    assert why in proc.stderr
    assert proc.stdout == ""  # no `done` line: the bot reads this pod as failed


def test_a_command_past_the_deadline_is_killed_and_ends_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "after"
    commands = [["sleep", "30"], ["touch", str(marker)]]
    proc = node("--timeout", "0.5", "--commands", json.dumps(commands))
    assert proc.returncode == 0, proc.stderr
    got = lines(proc.stdout)
    assert got[0]["timed_out"] is True and got[0]["exit_code"] == TIMEOUT_EXIT
    assert got[-1] == {"done": True, "commands": 1}
    assert not marker.exists()  # nothing after the timed-out command ran


def test_output_is_capped_per_stream_and_marked_truncated() -> None:
    commands = [["head", "-c", "100000", "/dev/zero"], ["echo", "small"]]
    proc = node("--timeout", "20", "--output-cap", "1000", "--commands", json.dumps(commands))
    got = lines(proc.stdout)
    assert len(got[0]["stdout"]) == 1000 and got[0]["truncated"] is True
    assert got[0]["exit_code"] == 0  # the rest was read and dropped: the command did not block
    assert got[1]["stdout"] == "small\n" and got[1]["truncated"] is False


def test_a_missing_binary_is_a_result_not_a_crash() -> None:
    proc = node("--timeout", "20", "--commands", json.dumps([["no-such-binary-x"], ["true"]]))
    got = lines(proc.stdout)
    assert got[0]["exit_code"] != 0 and "no-such-binary-x" in got[0]["stderr"]
    assert got[-1] == {"done": True, "commands": 2}


def test_host_pid_override_must_be_a_process_id() -> None:
    env = {**os.environ, "FLANNEL_BOT_HOST_PID": "1; rm"}
    proc = subprocess.run(
        [sys.executable, "-m", "flannel_bot.cli", "node", "--timeout", "5", "--commands", "[]"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "not a process id" in proc.stderr


def test_parse_and_nsenter_argv_are_pure() -> None:
    assert parse_commands('[["ip", "-j", "addr"]]') == [["ip", "-j", "addr"]]
    assert nsenter_argv(42, ["ip", "a"]) == [
        "nsenter", "--target", "42", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "ip", "a",
    ]  # fmt: skip


def test_a_peer_table_is_printed_as_its_digest_with_the_other_entries() -> None:
    routes = [
        {"dst": "default", "gateway": "172.31.248.1", "dev": "eth0"},
        {"dst": "10.244.2.0/24", "gateway": "10.244.2.0", "dev": "flannel.1", "flags": ["onlink"]},
        {"dst": "10.244.3.0/24", "gateway": "10.244.3.0", "dev": "flannel.1", "flags": ["onlink"]},
    ]
    commands = [["echo", json.dumps(routes)], ["echo", "not json"], ["false"], ["echo", "[]"]]
    digest = {"0": "ip-route", "1": "ip-route", "2": "fdb"}
    proc = node(
        "--timeout", "20", "--commands", json.dumps(commands), "--digest", json.dumps(digest)
    )
    assert proc.returncode == 0, proc.stderr
    got = lines(proc.stdout)
    want = digest_table("ip-route", json.dumps(routes))
    assert want is not None and want.count == 2
    assert got[0]["peer_digest"] == {"entries": 3, "count": 2, "digest": f"{want.digest:016x}"}
    assert json.loads(got[0]["stdout"]) == [routes[0]]  # only what is no peer's entry is sent
    # not a table, a failed command, a command not asked for: sent as they are
    assert "peer_digest" not in got[1] and got[1]["stdout"] == "not json\n"
    assert "peer_digest" not in got[2] and got[2]["exit_code"] == 1
    assert "peer_digest" not in got[3] and got[3]["stdout"] == "[]\n"


@pytest.mark.parametrize(
    ("digest", "why"),
    [
        ('{"5": "ip-route"}', "not the index of a command"),
        ('{"0": "ip-addr"}', "not one of ip-route, ip-neigh, fdb"),
        ('["ip-route"]', "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_a_digest_request_that_names_no_table_is_refused(digest: str, why: str) -> None:
    proc = node("--timeout", "5", "--commands", '[["true"]]', "--digest", digest)
    assert proc.returncode == 2 and why in proc.stderr and proc.stdout == ""
