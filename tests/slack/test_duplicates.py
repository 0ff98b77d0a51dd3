"""Reliability: 1,000 approval clicks at once (double clicks, Slack retries of the same click,
two approvers racing) apply the destructive step exactly once."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

from tests.slack.conftest import SECRET, SlackBot
from tests.slack.signing import block_actions_payload, interaction_body, sign
from tests.slack.test_slack_app import start_run, wait_status


def test_a_thousand_concurrent_approval_clicks_apply_once(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    users = itertools.cycle(["UBOB", "UCAROL"])
    bodies = []
    for i in range(1000):
        # 100 distinct clicks, each delivered 10 times (retries and redeliveries)
        payload = block_actions_payload(
            next(users), "C1", message_ts, "approve", value, action_ts=f"1700000000.{i % 100:06d}"
        )
        bodies.append(interaction_body(payload))

    def deliver(body: bytes) -> int:
        headers = sign(SECRET, body) | {"X-Slack-Retry-Num": "1"}
        return bot.post(body, headers).status

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(deliver, bodies))
    assert statuses.count(200) == 1000
    wait_status(bot, 1, "succeeded", timeout=60)
    bot.adapter.work.shutdown(wait=True)  # every acked click has been handled
    store = bot.adapter.app.store
    events = store.events(run_id=1)
    applied = [e for e in events if e.kind == "action_finished" and "DELETE" in e.data["render"]]
    assert len(applied) == 1
    assert [e.kind for e in events].count("approved") == 1
    rows = store.db.execute("SELECT COUNT(*) FROM deliveries WHERE source = 'approve'").fetchone()
    assert rows[0] == 100  # every distinct click recorded once, its copies recognised
    refusals = [json.dumps(c.params) for c in bot.slack.calls("chat.postEphemeral")]
    assert all("nothing to approve" in r or "already" in r for r in refusals), refusals[:3]
