"""Prove the Slack stand-in against the real slack_sdk and slack_bolt clients.

If these pass, tests of the bot can trust that what works against FakeSlack and the signing
helpers is what those libraries would send to, and accept from, real Slack.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from tests.slack.fake_slack import PROXY_ENV_VARS, FakeSlack, close_socket_mode_client
from tests.slack.signing import (
    block_actions_payload,
    interaction_body,
    load_fixture,
    sign,
    slash_command_body,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*flannel* is healthy"}}]


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


@pytest.fixture(autouse=True)
def _no_proxy_no_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """slack_sdk would route 127.0.0.1 through an env proxy; and no test may leak a thread."""
    for name in PROXY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while (extra := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not extra, f"threads left running: {extra}"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def web(slack: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=slack.base_url)


@pytest.fixture
def socket_client(slack: FakeSlack, web: WebClient) -> Iterator[SocketModeClient]:
    client = SocketModeClient(app_token="xapp-test", web_client=web)
    yield client
    close_socket_mode_client(client, slack)


def _acking_listener(
    received: queue.Queue[SocketModeRequest], payload: dict[str, Any] | None = None
) -> Any:
    def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        received.put(request)
        client.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload))

    return listener


# ----- Web API


def test_post_message_is_recorded_with_its_params(slack: FakeSlack, web: WebClient) -> None:
    response = web.chat_postMessage(channel="C1", text="hi", blocks=BLOCKS, thread_ts="1.2")

    (call,) = slack.wait_for("chat.postMessage")
    assert call.params == {"channel": "C1", "text": "hi", "blocks": BLOCKS, "thread_ts": "1.2"}
    assert call.headers["authorization"] == "Bearer xoxb-test"
    assert call.headers["content-type"].startswith("application/json")
    assert response["channel"] == "C1"
    assert response["message"]["blocks"] == BLOCKS
    assert response["message"]["thread_ts"] == "1.2"


def test_json_strings_in_form_bodies_are_decoded(slack: FakeSlack, web: WebClient) -> None:
    """slack_sdk form-encodes most methods, with blocks as a JSON string inside the form."""
    web.api_call("chat.postMessage", params={"channel": "C1", "blocks": json.dumps(BLOCKS)})

    (call,) = slack.calls("chat.postMessage")
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.params == {"channel": "C1", "blocks": BLOCKS}


def test_message_ts_values_are_unique_and_increasing(web: WebClient) -> None:
    stamps = [web.chat_postMessage(channel="C1", text=str(i))["ts"] for i in range(3)]

    assert stamps == ["1700000000.000100", "1700000000.000200", "1700000000.000300"]


@pytest.mark.parametrize(
    ("token", "method", "error"),
    [
        (None, "auth.test", "not_authed"),
        ("xapp-test", "chat.postMessage", "invalid_auth"),
        ("xoxb-test", "apps.connections.open", "invalid_auth"),
    ],
)
def test_tokens_are_checked(slack: FakeSlack, token: str | None, method: str, error: str) -> None:
    client = WebClient(token=token, base_url=slack.base_url)

    with pytest.raises(SlackApiError) as raised:
        client.api_call(method, params={"channel": "C1", "text": "x"})

    assert raised.value.response["error"] == error
    assert [c.method for c in slack.calls()] == [method]


def test_unknown_method_is_refused(web: WebClient) -> None:
    with pytest.raises(SlackApiError) as raised:
        web.api_call("chat.teleport")

    assert raised.value.response["error"] == "unknown_method"


def test_rate_limited_call_is_retried_after_retry_after(slack: FakeSlack) -> None:
    client = WebClient(
        token="xoxb-test",
        base_url=slack.base_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    slack.rate_limit("chat.update", times=1, retry_after=1)

    response = client.chat_update(channel="C1", ts="1700000000.000100", text="edited")

    first, second = slack.calls("chat.update")
    assert (first.rate_limited, second.rate_limited) == (True, False)
    assert second.at - first.at >= 1.0
    assert first.params == second.params
    assert response["text"] == "edited"


def test_rate_limit_reaches_a_client_without_retry_handler(
    slack: FakeSlack, web: WebClient
) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=7)

    with pytest.raises(SlackApiError) as raised:
        web.chat_postMessage(channel="C1", text="first")

    assert raised.value.response.status_code == 429
    assert raised.value.response["error"] == "ratelimited"
    assert raised.value.response.headers["Retry-After"] == "7"
    assert web.chat_postMessage(channel="C1", text="second")["ok"]


def test_delay_holds_the_answer(slack: FakeSlack, web: WebClient) -> None:
    slack.delay("chat.postMessage", 0.3)
    started = time.monotonic()

    web.chat_postMessage(channel="C1", text="slow")

    assert time.monotonic() - started >= 0.3


def test_wait_for_reports_what_it_saw(slack: FakeSlack, web: WebClient) -> None:
    web.auth_test()

    with pytest.raises(AssertionError, match=r"chat\.update.*auth\.test"):
        slack.wait_for("chat.update", timeout=0.05)


def test_identity_lookups(slack: FakeSlack, web: WebClient) -> None:
    slack.usergroups = {"S123": ["U1", "U2"]}
    slack.users = {"U1": "alice"}

    assert web.auth_test()["user_id"] == "UBOT"
    assert web.usergroups_users_list(usergroup="S123")["users"] == ["U1", "U2"]
    assert web.users_info(user="U1")["user"]["name"] == "alice"
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        web.usergroups_users_list(usergroup="S999")
    with pytest.raises(SlackApiError, match="user_not_found"):
        web.users_info(user="U999")


def test_post_ephemeral_answers_a_message_ts(web: WebClient) -> None:
    response = web.chat_postEphemeral(channel="C1", user="U1", text="only you")

    assert response["message_ts"] == "1700000000.000100"


def test_files_upload_v2_round_trip(slack: FakeSlack, web: WebClient) -> None:
    """files_upload_v2 gets an upload URL, POSTs the bytes there, then completes the upload."""
    response = web.files_upload_v2(
        channel="C1",
        content="diagnosis\n",
        filename="diag.txt",
        title="Diagnosis",
        initial_comment="here you go",
        thread_ts="1700000000.000100",
    )

    file_id = response["file"]["id"]
    assert slack.uploads == {file_id: b"diagnosis\n"}
    (url_call,) = slack.calls("files.getUploadURLExternal")
    assert (url_call.params["filename"], url_call.params["length"]) == ("diag.txt", "10")
    (complete,) = slack.calls("files.completeUploadExternal")
    assert complete.params["files"] == [{"id": file_id, "title": "Diagnosis"}]
    assert complete.params["channel_id"] == "C1"
    assert complete.params["thread_ts"] == "1700000000.000100"
    assert complete.params["initial_comment"] == "here you go"


def test_upload_to_an_unissued_file_id_is_refused(slack: FakeSlack) -> None:
    url = slack.base_url.replace("/api/", "/upload/F404")

    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)

    assert raised.value.code == 404
    assert slack.uploads == {}


# ----- Socket Mode


def test_socket_mode_envelope_is_delivered_and_acked(
    slack: FakeSlack, socket_client: SocketModeClient
) -> None:
    received: queue.Queue[SocketModeRequest] = queue.Queue()
    messages: queue.Queue[dict[str, Any]] = queue.Queue()
    socket_client.message_listeners.append(lambda _client, message, _raw: messages.put(message))
    socket_client.socket_mode_request_listeners.append(_acking_listener(received))
    socket_client.connect()
    slack.wait_connected()

    payload = {"command": "/flannel", "text": "diagnose node-1", "user_id": "U1"}
    envelope_id = slack.socket_send("slash_commands", payload)
    ack = slack.wait_for_ack(envelope_id)

    (opened,) = slack.calls("apps.connections.open")
    assert opened.headers["authorization"] == "Bearer xapp-test"
    hello = messages.get(timeout=5)
    assert hello["type"] == "hello"
    assert hello["connection_info"] == {"app_id": "A111"}
    request = received.get(timeout=5)
    assert (request.type, request.envelope_id, request.payload) == (
        "slash_commands",
        envelope_id,
        payload,
    )
    assert ack.message == {"envelope_id": envelope_id}
    assert ack.at >= slack.sent_at(envelope_id)


def test_large_envelope_and_ack_payload(slack: FakeSlack, socket_client: SocketModeClient) -> None:
    """Real interactive payloads exceed 125 bytes and slack_sdk's 1024-byte reads."""
    received: queue.Queue[SocketModeRequest] = queue.Queue()
    answer = {"text": "working on it " * 20}
    socket_client.socket_mode_request_listeners.append(_acking_listener(received, answer))
    socket_client.connect()
    slack.wait_connected()
    payload = block_actions_payload("U1", "C1", "1700000000.000100", "approve", "x" * 2000)

    envelope_id = slack.socket_send("interactive", payload, accepts_response_payload=True)

    ack = slack.wait_for_ack(envelope_id)
    assert ack.message == {"envelope_id": envelope_id, "payload": answer}
    request = received.get(timeout=5)
    assert request.payload == payload
    assert request.accepts_response_payload is True


def test_client_ping_is_answered(slack: FakeSlack, socket_client: SocketModeClient) -> None:
    """slack_sdk pings on connect and declares a connection stale without pongs."""
    socket_client.connect()
    slack.wait_connected()

    deadline = time.monotonic() + 5
    while socket_client.current_session.last_ping_pong_time is None:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no pong reached the client"
        time.sleep(0.01)


def test_disconnect_makes_client_reconnect_and_retries_arrive(
    slack: FakeSlack, socket_client: SocketModeClient
) -> None:
    received: queue.Queue[SocketModeRequest] = queue.Queue()
    socket_client.socket_mode_request_listeners.append(_acking_listener(received))
    socket_client.connect()
    slack.wait_connected()

    slack.socket_disconnect()
    slack.wait_connected(count=2)
    envelope_id = slack.socket_send(
        "events_api", {"event": {"type": "app_mention"}}, retry_attempt=1, retry_reason="timeout"
    )

    slack.wait_for_ack(envelope_id)
    assert len(slack.calls("apps.connections.open")) == 2
    request = received.get(timeout=5)
    assert (request.retry_attempt, request.retry_reason) == (1, "timeout")


def test_socket_refuses_an_unissued_ticket(slack: FakeSlack) -> None:
    port = int(slack.socket_url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }

    conn.request("GET", "/link/?ticket=forged", headers=headers)

    assert conn.getresponse().status == 401
    conn.close()
    assert slack.connections == 0


def test_wait_for_ack_times_out_with_what_it_saw(slack: FakeSlack) -> None:
    with pytest.raises(AssertionError, match="no ack for E1"):
        slack.wait_for_ack("E1", timeout=0.05)


# ----- signing


def test_sign_matches_slack_sdk_verifier() -> None:
    body = slash_command_body("diagnose node-1")
    headers = sign(SECRET, body)
    ts, signature = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]

    assert SignatureVerifier(SECRET).is_valid(body, ts, signature)
    assert not SignatureVerifier(SECRET).is_valid(body + b"&text=rm", ts, signature)
    assert not SignatureVerifier("another-secret").is_valid(body, ts, signature)


def test_sign_uses_the_given_timestamp() -> None:
    body = interaction_body({"type": "block_actions"})
    headers = sign(SECRET, body, timestamp=1_700_000_000)
    ts, signature = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]

    assert ts == "1700000000"
    assert SignatureVerifier(SECRET, clock=FixedClock(1_700_000_010)).is_valid(body, ts, signature)
    assert not SignatureVerifier(SECRET).is_valid(body, ts, signature)  # too old for now


def test_slash_command_body_has_slacks_fields() -> None:
    first = parse_qs(slash_command_body("status", trigger_id="1.2.abc").decode())
    second = parse_qs(slash_command_body("status", enterprise_id="E111").decode())

    assert list(first) == [
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ]
    assert first["trigger_id"] == ["1.2.abc"]
    assert first["text"] == ["status"]
    assert second["enterprise_id"] == ["E111"]
    assert second["trigger_id"] != parse_qs(slash_command_body("x").decode())["trigger_id"]


def test_response_urls_must_stay_local() -> None:
    outside = "https://hooks.slack.com/commands/T1/1/x"

    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        slash_command_body("x", response_url=outside)
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        block_actions_payload("U1", "C1", "1.2", "a", "v", response_url=outside)


def test_block_actions_payload_keeps_the_real_shape() -> None:
    payload = block_actions_payload("U2", "C9", "1700000000.000100", "approve", "req-1")
    again = block_actions_payload("U2", "C9", "1700000000.000100", "approve", "req-1")

    assert payload["user"]["id"] == "U2"
    assert payload["channel"]["id"] == "C9"
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000100",
        "channel_id": "C9",
        "is_ephemeral": False,
    }
    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == ("approve", "b", "req-1")
    assert action["type"] == "button"
    assert action["action_ts"] != again["actions"][0]["action_ts"]
    assert payload["response_url"].startswith("http://127.0.0.1:")
    assert payload["team"]["enterprise_id"] == "E111"  # the rest of the fixture survives
    assert load_fixture("block_actions.json")["user"]["id"] == "W111"  # and is not mutated


def test_bolt_accepts_the_signed_requests(slack: FakeSlack) -> None:
    """Bolt's own verification and parsing take what signing builds, and talk to the fake."""
    seen: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=2) as executor:
        app = App(
            signing_secret=SECRET,
            client=WebClient(token="xoxb-test", base_url=slack.base_url),
            process_before_response=True,
            listener_executor=executor,
        )

        @app.command("/flannel")
        def on_command(ack: Any, command: dict[str, Any], say: Any) -> None:
            ack()
            seen["command"] = command
            say("on it")

        @app.action("approve")
        def on_approve(ack: Any, body: dict[str, Any]) -> None:
            ack()
            seen["action"] = body

        command = slash_command_body("diagnose node-1")
        action = interaction_body(block_actions_payload("U2", "C1", "1.2", "approve", "req-1"))
        responses = [
            app.dispatch(BoltRequest(body=body.decode(), headers=dict(sign(SECRET, body))))
            for body in (command, action)
        ]
        forged = app.dispatch(
            BoltRequest(body=command.decode(), headers=dict(sign("wrong", command)))
        )

    assert [r.status for r in responses] == [200, 200]
    assert forged.status == 401
    assert seen["command"]["text"] == "diagnose node-1"
    assert seen["action"]["actions"][0]["value"] == "req-1"
    (posted,) = slack.calls("chat.postMessage")
    assert (posted.params["channel"], posted.params["text"]) == ("C1", "on it")
