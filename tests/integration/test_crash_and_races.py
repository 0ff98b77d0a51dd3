"""Real processes: one killed mid-step, several approving the same run at the same moment."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import BotEnv

pytestmark = pytest.mark.integration


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_sigkill_mid_step_leaves_the_run_interrupted_and_nothing_reapplied(
    make_env: Callable[..., BotEnv],
) -> None:
    # the replacement pod never turns Ready, so the approver's process sits in the post-check
    env = make_env(restart_seconds=3600)
    env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True)
    approver = env.popen(
        "approve", "1", user="bob", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: (
                bool(env.events("action_finished"))
                and any("DELETE" in e["data"]["render"] for e in env.events("action_finished"))
            )
        )
        time.sleep(0.3)  # a few post-check polls into step 2
        approver.send_signal(signal.SIGKILL)
        approver.wait(timeout=10)
    finally:
        if approver.poll() is None:
            approver.kill()
    assert approver.returncode == -signal.SIGKILL

    status = env.cli("status", "1", check=True).stdout  # the next process recovers the run
    assert "INTERRUPTED" in status and "died during step 2" in status
    assert env.cli("audit", "verify", check=True).stdout.startswith("audit chain OK")
    interrupted = env.events("run_interrupted")
    assert len(interrupted) == 1 and interrupted[0]["data"]["mid_step"] is True

    retry = env.cli("approve", "1", user="carol")
    assert retry.returncode == 1 and "interrupted mid-step and is never resumed" in retry.stdout
    deletes = [
        e for e in env.events("action_started") if e["data"]["action"]["type"] == "delete_pod"
    ]
    assert len(deletes) == 1  # applied once, by the killed process, never again
    # the node lock went with the interrupted run: a new run (and a new approval) is possible
    again = env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True).stdout
    assert "AWAITING_APPROVAL" in again


def test_simultaneous_approvals_from_processes_apply_once(make_env: Callable[..., BotEnv]) -> None:
    env = make_env(restart_seconds=0.5)
    env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True)
    procs = [
        env.popen("approve", "1", user=u, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for u in ("bob", "carol", "dave")
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1, 1], outputs
    applied = [
        e for e in env.events("action_started") if e["data"]["action"]["type"] == "delete_pod"
    ]
    assert len(applied) == 1
    assert len(env.events("approved")) == 1
    assert env.cli("audit", "verify", check=True).returncode == 0
