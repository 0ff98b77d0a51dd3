"""Socket Mode, the default: the app connects to a local WebSocket that speaks Slack's envelope
format, acknowledges each envelope by id before doing the work, and does a redelivery once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from slack_bolt.adapter.socket_mode import SocketModeHandler

from flannel_bot.settings import load_settings
from flannel_bot.slack.app import SlackAdapter
from flannel_bot.slack.serve import socket_mode_handler
from flannel_bot.wiring import build_app
from tests.fakes import FakeClock
from tests.slack.conftest import CONFIG
from tests.slack.fake_slack import FakeSlack, close_socket_mode_client
from tests.slack.signing import block_actions_payload, slash_command_body


@pytest.fixture
def handler(slack: FakeSlack, tmp_path: Path) -> Iterator[SocketModeHandler]:
    config = tmp_path / "flannel-bot.toml"
    config.write_text(CONFIG.replace('mode = "http"', 'mode = "socket"'))
    env = {
        "HOME": str(tmp_path),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_APP_TOKEN": "xapp-test",
        "SLACK_API_URL": slack.base_url,
    }
    settings = load_settings(config, env, overrides={"db": str(tmp_path / "bot.db")})
    assert settings.slack.mode == "socket" and settings.slack.problems() == []
    adapter = SlackAdapter(build_app(settings, FakeClock()), settings.slack)
    adapter.progress.start()
    handler = socket_mode_handler(adapter)
    handler.connect()  # type: ignore[no-untyped-call]
    slack.wait_connected()
    try:
        yield handler
    finally:
        close_socket_mode_client(handler.client, slack)
        adapter.work.shutdown(wait=True)
        adapter.progress.stop()


def command_payload(text: str, user: str = "UALICE", trigger_id: str | None = None) -> dict:
    return dict(parse_qsl(slash_command_body(text, user_id=user, trigger_id=trigger_id).decode()))


def test_an_envelope_is_acked_by_id_before_the_work(
    handler: SocketModeHandler, slack: FakeSlack
) -> None:
    slack.delay("chat.postMessage", 1.0)
    envelope = slack.socket_send("slash_commands", command_payload("diagnose"))
    ack = slack.wait_for_ack(envelope)
    assert ack.message["envelope_id"] == envelope
    posted = slack.wait_for("chat.postMessage", 2, timeout=10)
    assert ack.at < posted[0].at + 1.0  # acked while the first post was still in flight
    assert posted[1].params["thread_ts"]


def test_a_redelivered_envelope_is_done_once(handler: SocketModeHandler, slack: FakeSlack) -> None:
    payload = command_payload("help", trigger_id="1111.2222.redelivered")
    first = slack.socket_send("slash_commands", payload)
    slack.wait_for_ack(first)
    slack.wait_for("chat.postMessage", 2)
    again = slack.socket_send("slash_commands", payload, retry_attempt=1, retry_reason="timeout")
    slack.wait_for_ack(again)
    time.sleep(0.5)
    assert len(slack.calls("chat.postMessage")) == 2


def test_approval_over_socket_mode(handler: SocketModeHandler, slack: FakeSlack) -> None:
    slack.socket_send("slash_commands", command_payload("run flannel.restart-pods@1.1.0 nodes=w2"))
    deadline = time.monotonic() + 10
    value = thread = None
    while value is None and time.monotonic() < deadline:
        for c in slack.calls("chat.postMessage"):
            for block in c.params.get("blocks") or []:
                for e in block.get("elements") or []:
                    if e.get("action_id") == "approve":
                        value, thread = e["value"], c.params["thread_ts"]
        time.sleep(0.05)
    assert value is not None and thread is not None
    click = block_actions_payload("UBOB", "C1", thread, "approve", value)
    envelope = slack.socket_send("interactive", click)
    slack.wait_for_ack(envelope)
    deadline = time.monotonic() + 10
    while not any("Audit trail" in str(c.params) for c in slack.calls("chat.update")):
        assert time.monotonic() < deadline, [c.params.get("text") for c in slack.calls()]
        time.sleep(0.05)
