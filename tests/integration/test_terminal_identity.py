"""Approving at the terminal, as a real subprocess: `--user` is a claim the bot cannot check, so
an approval counts as the OS login running flannel-bot (as `kubectl exec` into the pod would)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from flannel_bot.ports.store import Requester
from flannel_bot.settings import load_settings
from flannel_bot.terminal import os_login
from flannel_bot.wiring import build_app
from tests.integration.conftest import BotEnv

pytestmark = pytest.mark.integration
RUN = ("run", "flannel.restart-pods@1.1.0", "nodes=w2", "--json")


def started(env: BotEnv, user: str) -> int:
    run = json.loads(env.cli(*RUN, user=user, check=True).stdout)
    assert run["status"] == "awaiting_approval"
    return int(run["id"])


def test_a_claimed_name_cannot_approve_anothers_run(make_env: Callable[..., BotEnv]) -> None:
    env = make_env(terminal="")  # the default: approvals count as the login
    run = started(env, "alice")
    for claim in (("--user", "bob"), ("--user=bob",)):
        refused = env.cli(*claim, "approve", str(run), user="alice")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "`--user bob` cannot approve here" in refused.stdout
        assert f"({os_login()}, `{os_login()}` to the policy)" in refused.stdout
    denied = env.cli("deny", str(run), user="bob")
    assert "`--user bob` cannot deny here" in denied.stdout
    status = json.loads(env.cli("status", str(run), "--json", check=True).stdout)
    assert status["status"] == "awaiting_approval"
    assert env.events("approved") == [] and env.events("denied") == []
    rejected = env.events("command_rejected")
    assert [e["data"]["error_type"] for e in rejected] == ["IdentityRefused"] * 3
    assert {json.loads(e["source"])["identity"] for e in rejected} == {"asserted"}
    assert {json.loads(e["source"])["os_user"] for e in rejected} == {os_login()}


def asked_in_slack(env: BotEnv) -> int:
    """alice's run, asked for from Slack (not from this login)."""
    app = build_app(load_settings(env.config, {"HOME": str(env.root)}))
    slack = {"adapter": "slack", "channel": "C1", "user_id": "UALICE", "identity": "slack"}
    run = app.engine.start("flannel.restart-pods@1.1.0", {"nodes": "w2"}, Requester("alice", slack))
    app.store.close()
    return run.id


def test_the_login_approves_under_its_mapped_name(make_env: Callable[..., BotEnv]) -> None:
    env = make_env(terminal=f'[terminal.users]\n"{os_login()}" = "bob"\n')
    run = asked_in_slack(env)
    approved = env.cli("approve", str(run), user="")  # no --user: the login speaks
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "SUCCEEDED" in approved.stdout
    [event] = env.events("approved")
    assert event["actor"] == "bob"
    assert json.loads(event["source"]) == {
        "adapter": "cli",
        "user": "bob",
        "identity": "os-user",
        "os_user": os_login(),
    }
    # the same login, having asked as carol, may not approve its own run as bob
    second = started(env, "carol")
    again = env.cli("approve", str(second), user="")
    assert again.returncode == 1
    assert f"requested from the login {os_login()} (as carol)" in again.stdout
