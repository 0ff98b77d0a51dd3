"""Audit requests in Slack: a channel's trail stays in that channel, and a report asked with a
date that does not exist is answered, to the requester alone."""

from __future__ import annotations

import time

from tests.slack.conftest import SlackBot
from tests.slack.test_slack_app import start_run, wait_status


def test_a_report_on_another_channel_is_refused_to_the_requester_alone(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UBOB", message_ts)
    wait_status(bot, 1, "succeeded")
    bot.command("audit report channel=C1 format=jsonl", user="UMAL", channel_id="CPUB")
    (refusal,) = bot.slack.wait_for("chat.postEphemeral")
    assert refusal.params["channel"] == "CPUB" and refusal.params["user"] == "UMAL"
    text = str(refusal.params["text"])
    assert "channel C1" in text and "audit_all_channels" in text
    time.sleep(0.3)
    assert bot.slack.calls("files.completeUploadExternal") == []
    assert bot.slack.uploads == {}


def test_a_report_in_its_own_channel_is_uploaded_there(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UBOB", message_ts)
    wait_status(bot, 1, "succeeded")
    bot.command("audit report run=1 format=md", user="UMAL")
    done = bot.slack.wait_for("files.completeUploadExternal")[0].params
    assert done["channel_id"] == "C1"
    (md,) = bot.slack.uploads.values()
    assert b"- approved by **bob**" in md


def test_a_report_date_that_does_not_exist_is_answered(bot: SlackBot) -> None:
    bot.command("audit report --since 999999w")
    bot.command("audit report --from 2026-13-45")
    refusals = bot.slack.wait_for("chat.postEphemeral", 2)
    texts = sorted(str(c.params["text"]) for c in refusals)
    assert "`from=2026-13-45` is not a date: month must be in 1..12" in texts[0]
    assert "`since=999999w` is longer than" in texts[1]
    assert all(c.params["user"] == "UALICE" for c in refusals)
    time.sleep(0.3)
    assert bot.slack.calls("files.completeUploadExternal") == []
