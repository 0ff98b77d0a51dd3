"""Every Slack template escapes each value that comes from a person or the cluster: rendered with
markup in all of them, no mrkdwn text holds a `<` other than the mentions the bot writes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flannel_bot.service.handler import Reply
from flannel_bot.settings import REPO_ROOT
from flannel_bot.slack.blocks import defuse
from flannel_bot.slack.messages import Messages
from tests.unit.test_diagnose_templates import br_netfilter, reply_data
from tests.unit.test_slack_templates import plan_view, run_view

MESSAGES = Messages(REPO_ROOT / "templates")
HOSTILE = " <!channel> <https://x|Approve> & "
MENTION = "<@U1>"  # what the adapter passes in as a mention: it must stay one


def mrkdwn_texts(payload: Any) -> list[str]:
    texts = [payload["text"]]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == "mrkdwn":
                texts.append(value["text"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(payload["blocks"])
    return texts


def assert_escaped(payload: dict[str, Any]) -> None:
    for text in mrkdwn_texts(payload):
        bare = text.replace(MENTION, "")
        assert "<" not in bare and ">" not in bare, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", bare), text


def test_diagnose_escapes_the_cluster_name() -> None:
    data = {**reply_data([br_netfilter()]), "cluster": "prod" + HOSTILE}
    payload = MESSAGES.reply(Reply("diagnose", data), MENTION, "diagnose")
    assert "prod &lt;!channel&gt;" in str(payload)
    assert_escaped(payload)


@pytest.mark.parametrize("final", [False, True])
def test_progress_escapes_every_field(final: bool) -> None:
    p = {
        "run_id": 3,
        "ref": "flannel.restart-pods@1.2.0" + HOSTILE,
        "status": "failed" if final else "running",
        "step": 2,
        "steps": 3,
        "title": "Restart" + HOSTILE,
        "node": "w2" + HOSTILE,
        "elapsed": "0:14",
        "detail": "`DELETE pod`" + HOSTILE,
        "final": final,
        "first_event": 4,
        "last_event": 20,
        "head": "f" * 64,
    }
    assert_escaped(MESSAGES.progress(p))


def test_plans_and_approvals_escape_every_field() -> None:
    plan = {**plan_view(3, 2, HOSTILE), "ref": "x@1.0.0" + HOSTILE, "cluster": "c" + HOSTILE}
    assert_escaped(MESSAGES.plan(plan, MENTION, '{"ref":"x"}'))
    for status in ("awaiting_approval", "denied"):
        run = {**run_view(status, 3, 2, HOSTILE), "cluster": "c" + HOSTILE}
        assert_escaped(MESSAGES.approval(run, MENTION, f"Denied by {MENTION}"))


def test_text_replies_and_errors_escape_what_they_quote() -> None:
    reply = Reply("error", {"message": f"`nodes={HOSTILE}` is not a valid node name"})
    assert "<" not in MESSAGES.error(reply) and "&lt;!channel&gt;" in MESSAGES.error(reply)
    body = MESSAGES.text("`/flannel status`", "line" + HOSTILE, MENTION, "status" + HOSTILE)
    assert_escaped(body)


def test_defuse_keeps_only_the_bots_own_mentions_and_entities() -> None:
    assert defuse("<@UALICE> said <!here> & <https://x|y> &amp; &lt;") == (
        "<@UALICE> said &lt;!here&gt; &amp; &lt;https://x|y&gt; &amp; &lt;"
    )
    assert defuse(defuse(HOSTILE)) == defuse(HOSTILE)
