"""In Slack, a bot serving several clusters: the buttons of a message act on the cluster that
message was about, not on the default one."""

from __future__ import annotations

import json

import pytest

from tests.slack.conftest import CONFIG, EXAMPLE_CLUSTER, SlackBot


@pytest.fixture
def bot_config() -> str:
    recorded = f'recording = "{EXAMPLE_CLUSTER}"\n'
    return CONFIG.replace(recorded, 'default_cluster = "prod-eu"\n') + (
        f'[clusters.prod-eu]\nrecording = "{EXAMPLE_CLUSTER}"\n'
        f'[clusters.prod-us]\nrecording = "{EXAMPLE_CLUSTER}"\n'
    )


def _button(message: dict[str, object], prefix: str) -> dict[str, str]:
    return next(
        e
        for b in message["blocks"]  # type: ignore[attr-defined]
        for e in b.get("elements") or []
        if str(e.get("action_id", "")).startswith(prefix)
    )


def test_plan_fix_and_start_run_stay_on_the_diagnosed_cluster(bot: SlackBot) -> None:
    bot.command("diagnose --cluster prod-us")
    report = bot.messages(2)[1]
    assert "*Cluster:* prod-us" in json.dumps(report)
    fix = _button(report, "plan_fix:")
    assert json.loads(fix["value"])["cluster"] == "prod-us"
    bot.click(fix["action_id"], fix["value"], "UALICE", report["thread_ts"])
    plan = bot.message_with("Start run")
    assert "*Cluster* `prod-us`" in json.dumps(plan)
    start = _button(plan, "start_run")
    bot.click("start_run", start["value"], "UALICE", report["thread_ts"])
    approval = bot.message_with("Waiting for approval")
    assert "*Cluster* `prod-us`" in json.dumps(approval)
    run = bot.adapter.app.store.run(1)
    assert (run.cluster, run.status) == ("prod-us", "awaiting_approval")
    texts = [e.data["text"] for e in bot.adapter.app.store.events() if e.kind == "command"]
    assert texts[-1].endswith("--cluster prod-us")


def test_an_unknown_cluster_is_told_to_the_requester_alone(bot: SlackBot) -> None:
    bot.command("diagnose --cluster prod-xx")
    said = bot.slack.wait_for("chat.postEphemeral", 1)[0].params
    assert "there is no cluster `prod-xx`; this bot serves: prod-eu, prod-us" in said["text"]
