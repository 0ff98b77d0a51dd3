"""HTTP mode's front door against the real server: bodies are capped before they are read, the
signature is checked before anything is parsed, a body never reaches the log, what cannot be
read is a 400 (401 for the signature and its timestamp), and slash commands without a trigger
id are told apart by their signed bytes."""

from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.slack.conftest import SECRET, SlackBot
from tests.slack.signing import sign, slash_command_body
from tests.slack.wire import address, chunked, head, status_of

MIB = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(autouse=True)
def every_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Everything logged is captured; set before the app exists, which copies the root's level
    into Bolt's loggers (as `serve` does, after `configure` set it)."""
    caplog.set_level(logging.DEBUG)


def without_trigger_id(body: bytes) -> bytes:
    return urlencode([(k, v) for k, v in parse_qsl(body.decode()) if k != "trigger_id"]).encode()


def test_a_body_longer_than_the_limit_is_refused_before_it_is_sent(bot: SlackBot) -> None:
    with socket.create_connection(address(bot.url), timeout=10) as conn:
        # the head promises 100 MiB; none of it is sent, so only a server that answers from
        # the head alone answers at all
        conn.sendall(head(bot.url, {"Content-Type": FORM, "Content-Length": str(100 * MIB)}))
        assert status_of(conn, timeout=5) == 413


def test_a_chunked_body_over_the_limit_is_refused(bot: SlackBot) -> None:
    assert chunked(bot.url, {"Content-Type": FORM}, chunks=20, size=64 * 1024) == 413


def test_a_signed_body_of_exactly_the_limit_is_served(bot: SlackBot) -> None:
    body = slash_command_body("help", user_id="UALICE") + b"&pad="
    body += b"a" * (MIB - len(body))
    assert len(body) == MIB
    assert bot.post(body, sign(SECRET, body)).status == 200
    bot.messages(2)


@pytest.mark.parametrize("signed_with", ["not-the-secret", "stale"])
def test_a_refused_body_never_reaches_the_log(
    bot: SlackBot, caplog: pytest.LogCaptureFixture, signed_with: str
) -> None:
    forged = "\n2030-01-01 00:00:00,000 INFO bot.slack.app: approved by alice"
    body = slash_command_body(f"help MARKER{forged}", user_id="UALICE")
    headers = (
        sign(SECRET, body, timestamp=int(time.time()) - 3600)
        if signed_with == "stale"
        else sign(signed_with, body)
    )
    assert bot.post(body, headers).status == 401
    assert "MARKER" not in caplog.text
    assert "approved by alice" not in caplog.text


def test_a_timestamp_that_is_not_a_number_is_401(bot: SlackBot) -> None:
    body = slash_command_body("help", user_id="UALICE")
    headers = sign(SECRET, body) | {"X-Slack-Request-Timestamp": "soon"}
    assert bot.post(body, headers).status == 401
    headers = sign(SECRET, body) | {"X-Slack-Request-Timestamp": "1e9"}
    assert bot.post(body, headers).status == 401


MALFORMED = {
    "payload that is not JSON": ("payload=%7Bnot-json", FORM),
    "payload that is a list": ("payload=%5B1%2C2%5D", FORM),
    "payload whose user is a string": (
        urlencode({"payload": json.dumps({"type": "block_actions", "user": "UBOB"})}),
        FORM,
    ),
    "payload whose actions are not a list": (
        urlencode(
            {
                "payload": json.dumps(
                    {"type": "block_actions", "user": {"id": "UBOB"}, "actions": "approve"}
                )
            }
        ),
        FORM,
    ),
    "payload whose team is a number": (
        urlencode({"payload": json.dumps({"type": "block_actions", "team": 7})}),
        FORM,
    ),
    "JSON body that does not parse": ('{"type": "event_callback"', "application/json"),
    "JSON nested deeper than it can be read": ("[" * 100_000, "application/json"),
    "events nested in events": ('{"event": ' * 2000 + "{}" + "}" * 2000, "application/json"),
    "JSON body that is a string": ('"event_callback"', "application/json"),
    "JSON body that is a list, with a charset": ("[1]", "application/json; charset=utf-8"),
    "body that is not UTF-8": ("command=%2Fflannel&text=\udcff", FORM),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_signed_payload_that_cannot_be_read_is_400(bot: SlackBot, name: str) -> None:
    text, content_type = MALFORMED[name]
    body = text.encode("utf-8", "surrogateescape")
    response = bot.post(body, sign(SECRET, body) | {"Content-Type": content_type})
    assert response.status == 400, response
    time.sleep(0.2)
    assert bot.slack.calls() == []


def test_slash_commands_without_a_trigger_id_are_each_done_and_their_retries_once(
    bot: SlackBot,
) -> None:
    now = int(time.time())
    help_cmd = without_trigger_id(slash_command_body("help", user_id="UALICE"))
    status_cmd = without_trigger_id(slash_command_body("status", user_id="UALICE"))
    # two distinct commands, then the same text typed again a second later: three commands
    assert bot.post(help_cmd, sign(SECRET, help_cmd, now)).status == 200
    assert bot.post(status_cmd, sign(SECRET, status_cmd, now)).status == 200
    assert bot.post(help_cmd, sign(SECRET, help_cmd, now + 1)).status == 200
    # Slack's retries of the first: the same body, signed again when sent
    for retry in ("1", "2"):
        headers = sign(SECRET, help_cmd, now + 2) | {"X-Slack-Retry-Num": retry}
        assert bot.post(help_cmd, headers).status == 200
    bot.messages(6)  # a root and a reply for each of the three
    time.sleep(0.5)
    roots = [c for c in bot.slack.calls("chat.postMessage") if "thread_ts" not in c.params]
    assert len(roots) == 3, [c.params["text"] for c in roots]


SLACK_FIELDS = (
    "type",
    "user",
    "team",
    "enterprise",
    "channel",
    "container",
    "message",
    "view",
    "event",
    "state",
    "actions",
    "authorizations",
    "is_enterprise_install",
    "api_app_id",
    "trigger_id",
    "callback_id",
    "command",
    "user_id",
    "channel_id",
    "team_id",
    "enterprise_id",
    "is_ext_shared_channel",
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
NEAR_SLACK: st.SearchStrategy[dict[str, object]] = st.deferred(
    lambda: st.dictionaries(
        st.sampled_from(SLACK_FIELDS),
        JSON
        | st.sampled_from(["block_actions", "view_submission", "shortcut", "event_callback"])
        | st.fixed_dictionaries({"id": st.text(max_size=4)}, optional={"team_id": JSON})
        | st.lists(
            st.fixed_dictionaries({"action_id": st.sampled_from(["approve", "x"])}), max_size=2
        )
        | NEAR_SLACK  # `event` and each of `authorizations` are read as payloads too
        | st.lists(NEAR_SLACK, max_size=2),
        max_size=6,
    )
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payload=NEAR_SLACK | JSON,
    as_form=st.booleans(),
    content_type=st.sampled_from(
        [FORM, "application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
)
def test_no_signed_payload_is_answered_500(
    bot: SlackBot, payload: object, as_form: bool, content_type: str
) -> None:
    text = json.dumps(payload)
    body = (urlencode({"payload": text}) if as_form else text).encode()
    response = bot.post(body, sign(SECRET, body) | {"Content-Type": content_type})
    assert response.status in (200, 400, 404), (response, payload)
