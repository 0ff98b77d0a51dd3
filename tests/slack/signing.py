"""Build signed HTTP requests the way Slack sends them to an app (slash commands, interactions).

Bodies follow Slack's real field sets; interaction payloads start from recorded fixtures in
``tests/fixtures/slack``. Every ``response_url`` must point at 127.0.0.1 so that nothing a test
triggers can reach Slack.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack"
LOCAL_RESPONSE_URL = "http://127.0.0.1:9/never-called"
_sequence = itertools.count(1)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers of a request signed with Slack's v0 scheme (HMAC-SHA256 of ``v0:ts:body``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_command_body(
    text: str,
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    trigger_id: str | None = None,
    command: str = "/flannel",
    *,
    response_url: str = LOCAL_RESPONSE_URL,
    channel_name: str = "flannel-ops",
    team_id: str = "T111",
    enterprise_id: str | None = None,
) -> bytes:
    """Form body of a slash command request, with the fields Slack documents, in its order."""
    fields = {
        "token": "verification_token",  # deprecated verification token, still sent
        "team_id": team_id,
        "team_domain": "workspace-domain",
    }
    if enterprise_id is not None:
        fields |= {"enterprise_id": enterprise_id, "enterprise_name": "Sandbox Org"}
    fields |= {
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": "A111",
        "is_enterprise_install": "false",
        "response_url": _local(response_url),
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode(fields).encode()


def interaction_body(payload: dict[str, Any]) -> bytes:
    """Form body of an interaction request: ``payload=<url-encoded JSON>``."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def block_actions_payload(
    user_id: str,
    channel_id: str,
    message_ts: str,
    action_id: str,
    value: str,
    block_id: str = "b",
    *,
    action_ts: str | None = None,
    response_url: str = LOCAL_RESPONSE_URL,
) -> dict[str, Any]:
    """A real ``block_actions`` payload (button in a channel message) aimed at our own ids."""
    payload = load_fixture("block_actions.json")
    payload["user"]["id"] = user_id
    payload["channel"]["id"] = channel_id
    payload["container"] |= {
        "channel_id": channel_id,
        "message_ts": message_ts,
        "is_ephemeral": False,
    }
    action = payload["actions"][0] | {
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "action_ts": action_ts or _unique_ts(),
    }
    payload["actions"] = [action]
    payload["response_url"] = _local(response_url)
    return payload


def load_fixture(name: str) -> dict[str, Any]:
    """A fresh copy of a recorded Slack payload from ``tests/fixtures/slack``."""
    return copy.deepcopy(_parsed_fixture(name))


def new_trigger_id() -> str:
    """A unique id shaped like Slack's (``<number>.<number>.<hex>``)."""
    return f"{1_000_000_000 + next(_sequence)}.738474920.{uuid.uuid4().hex[:21]}"


@functools.cache
def _parsed_fixture(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return parsed


def _unique_ts() -> str:
    return f"{int(time.time())}.{next(_sequence):06d}"


def _local(url: str) -> str:
    """Refuse URLs that would let a test talk to anything but this machine."""
    if urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"response_url must point at 127.0.0.1, got {url!r}")
    return url
