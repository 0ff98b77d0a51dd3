"""The reliability suite's crash test: the approving process is SIGKILLed right after each
boundary of a destructive, two-node rolling restart (the event that marks it is committed, as
after a power cut). The next process finds the run `interrupted`, no committed event is lost, the
chain verifies, and nothing is applied again without a new run and a new approval."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import pytest

from tests.integration.conftest import FLANNEL_BOT, BotEnv

pytestmark = pytest.mark.integration
RUN = ("run", "flannel.restart-pods", "nodes=w1,w2", "force=true")
# in the approving process: approved, step 2 starts, per node: disruption, delete, wait
BOUNDARIES = [
    "approved:1",
    "step_started:1",
    "action_started:2",  # about to delete w1's flannel pod
    "action_finished:2",  # w1's pod deleted
    "action_finished:3",  # w1's replacement Ready
    "action_started:5",  # about to delete w2's pod
    "action_finished:6",  # both nodes done
    "check:1",
    "step_finished:1",
    "verify:1",
]


def deletes(env: BotEnv) -> list[str]:
    return [
        e["data"]["render"]
        for e in env.events("action_finished")
        if e["data"]["render"].startswith("DELETE")
    ]


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_sigkill_at_a_step_boundary(boundary: str, make_env: Callable[..., BotEnv]) -> None:
    env = make_env(restart_seconds=0.2)
    started = env.cli(*RUN, check=True).stdout
    assert "AWAITING_APPROVAL" in started
    kind, _, n = boundary.partition(":")
    before = len(env.events(kind))
    approver = subprocess.run(
        [FLANNEL_BOT, "--user", "bob", "approve", "1"],
        env=env.env(FLANNEL_BOT_KILL_AFTER=boundary),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approver.returncode == -signal.SIGKILL, approver.stdout + approver.stderr
    assert len(env.events(kind)) == before + int(n)  # the event at the boundary was kept
    applied = deletes(env)

    status = env.cli("status", "1", check=True).stdout  # the next process recovers the run
    assert "INTERRUPTED" in status, status
    assert env.cli("audit", "verify", check=True).stdout.startswith("audit chain OK")
    assert len(env.events("run_interrupted")) == 1

    retry = env.cli("approve", "1", user="carol")
    assert retry.returncode == 1 and "never resumed" in retry.stdout
    assert deletes(env) == applied  # nothing applied again
    assert env.cli(*RUN, check=True).stdout.count("AWAITING_APPROVAL") == 1  # a new run may
