"""What people type and what the cluster says is echoed into Slack as text, never as markup: no
`<!channel>` ping, no link disguised as a button, whichever message echoes it."""

from __future__ import annotations

import json
import time

from tests.slack.conftest import SlackBot
from tests.slack.test_slack_app import start_run, wait_status

HOSTILE = "`<!channel> <https://x|Approve>`"
MARKUP = ("<!channel>", "<!here>", "<https://x|Approve>", "<https://")


def mrkdwn_texts(bot: SlackBot) -> list[str]:
    """Every text Slack reads as mrkdwn in every message the stand-in received."""
    texts: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str):
                texts.append(value["text"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for call in bot.slack.calls():
        for key in ("text", "initial_comment"):
            if isinstance(call.params.get(key), str):
                texts.append(call.params[key])
        walk(call.params.get("blocks"))
    return texts


def test_a_denial_echoes_the_command_and_reason_escaped(bot: SlackBot) -> None:
    """The reproduced finding: `/flannel deny 1 `<!channel> <https://x|Approve>`` pinged the
    channel from the echoed command, and showed a link dressed as an Approve button."""
    _, _ = start_run(bot)
    assert bot.command(f"deny 1 {HOSTILE}", user="UBOB").status == 200
    wait_status(bot, 1, "denied")
    bot.message_with("Denied by <@UBOB>")
    root = next(
        c.params["text"]
        for c in bot.slack.calls("chat.postMessage")
        if "deny 1" in str(c.params.get("text"))
    )
    assert "&lt;!channel&gt;" in root and "&lt;https://x|Approve&gt;" in root
    texts = mrkdwn_texts(bot)
    assert any("&lt;!channel&gt;" in t for t in texts if "Denied by" in t)
    assert not [t for t in texts for m in MARKUP if m in t]
    assert any("<@UBOB>" in t for t in texts)  # the bot's own mentions stay mentions


def test_an_error_quoting_the_input_is_escaped(bot: SlackBot) -> None:
    bot.command("run flannel.restart-pods@1.1.0 nodes=<!here>")
    (error,) = bot.slack.wait_for("chat.postEphemeral")
    assert "&lt;!here&gt;" in error.params["text"] and "<!here>" not in error.params["text"]


def test_cluster_text_in_a_reply_is_escaped(bot: SlackBot) -> None:
    """A pod's log line can say anything; quoted in a reply it is text."""
    bot.adapter.client.chat_postMessage(
        channel="C1",
        text="log: <!channel> & <https://evil|click>",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "E0101 <!here> a&b"}}],
    )
    time.sleep(0.05)
    last = bot.slack.calls("chat.postMessage")[-1].params
    assert last["text"] == "log: &lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
    assert json.dumps(last["blocks"]).count("&lt;!here&gt; a&amp;b") == 1
