"""Approve and Deny count only from the workspace and channel the run was asked for in: Slack's
real block_actions payload, signed as Slack signs it, from another workspace or channel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flannel_bot.slack.origin import click_refusal, team_of
from tests.slack.conftest import SECRET, SlackBot
from tests.slack.signing import (
    block_actions_payload,
    interaction_body,
    load_fixture,
    sign,
    slash_command_body,
)
from tests.slack.test_slack_app import start_run, wait_status


def click(
    bot: SlackBot, action: str, value: str, message_ts: str, channel: str = "C1", team: str = ""
) -> None:
    payload = block_actions_payload("UBOB", channel, message_ts, action, value)
    if team:  # the real payload names the workspace twice: the team, and the user's team
        payload["team"]["id"] = payload["user"]["team_id"] = team
    body = interaction_body(payload)
    assert bot.post(body, sign(SECRET, body)).status == 200


def refusals(bot: SlackBot, count: int) -> list[dict[str, Any]]:
    return [c.params for c in bot.slack.wait_for("chat.postEphemeral", count)]


def test_the_run_records_the_workspace_it_was_asked_in(bot: SlackBot) -> None:
    start_run(bot)
    run = bot.adapter.app.store.run(1)
    assert run.source["team_id"] == "T111" and run.source["channel"] == "C1"
    assert run.source["identity"] == "slack"


def test_a_click_from_another_workspace_is_refused(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    click(bot, "approve", value, message_ts, team="T999")
    [refusal] = refusals(bot, 1)
    assert refusal["user"] == "UBOB" and refusal["channel"] == "C1"
    assert "run 1 was asked for in another Slack workspace (T111)" in refusal["text"]
    store = bot.adapter.app.store
    assert store.run(1).status == "awaiting_approval"
    rejected = [e for e in store.events() if e.kind == "command_rejected"]
    assert [e.data["error_type"] for e in rejected] == ["WrongWorkspace"]
    assert rejected[0].source["team_id"] == "T999" and rejected[0].actor == "bob"


def test_a_click_from_another_channel_is_refused(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    click(bot, "deny", value, message_ts, channel="C2")
    [refusal] = refusals(bot, 1)
    assert refusal["channel"] == "C2"  # told where they clicked, and where to go
    assert "run 1 waits for approval in channel C1, not here" in refusal["text"]
    assert bot.adapter.app.store.run(1).status == "awaiting_approval"
    click(bot, "approve", value, message_ts)  # from the run's own workspace and channel
    wait_status(bot, 1, "succeeded")


def test_a_typed_approval_from_another_workspace_is_refused(bot: SlackBot) -> None:
    start_run(bot)
    body = slash_command_body("approve 1", user_id="UBOB", user_name="bob", team_id="T999")
    assert bot.post(body, sign(SECRET, body)).status == 200
    [refusal] = refusals(bot, 1)
    assert "another Slack workspace" in refusal["text"]
    assert bot.adapter.app.store.run(1).status == "awaiting_approval"
    # from the run's workspace, in any channel, a typed approval counts
    assert bot.command("approve 1", user="UBOB", channel_id="C2").status == 200
    wait_status(bot, 1, "succeeded")


def test_the_workspace_of_each_payload_shape() -> None:
    actions = load_fixture("block_actions.json")
    assert team_of(actions) == "T111"
    actions["team"] = None  # an org-wide install: the user's team
    assert team_of(actions) == "T111"
    command = dict(json.loads(json.dumps({"team_id": "T222", "user_id": "U1"})))
    assert team_of(command) == "T222"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"adapter": "cli", "user": "alice"}, "was not asked for in Slack"),
        ({"adapter": "slack", "channel": "C1"}, "before flannel-bot recorded Slack workspaces"),
    ],
)
def test_runs_without_a_slack_origin_take_no_clicks(
    bot: SlackBot, source: dict[str, str], message: str
) -> None:
    import dataclasses

    start_run(bot)
    run = dataclasses.replace(bot.adapter.app.store.run(1), source=source)
    refusal = click_refusal(run, "T111", "C1")
    assert refusal is not None and message in str(refusal)
