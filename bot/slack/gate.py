"""HTTP mode's door: what a request to /slack/events must be before Bolt sees it.

Bolt parses a body before it checks the signature, logs the body of a request that fails the
check, and answers 500 to a payload it cannot read. Here the raw bytes are checked first (their
length, then the signature and its timestamp), and only a signed body is parsed, by the rules
Bolt parses by, and held to the shapes Bolt and the listeners read. Anything else is refused with
a status for Slack (413, 401, 400) and a reason that quotes no part of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from flannel_bot.errors import BotError

SIGNATURE_WINDOW = 300  # seconds a signature stays valid either side of now (Slack's docs)
_DIGITS = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class RequestRefused(BotError):
    """A request to /slack/events that is not served; `status` is the HTTP answer."""

    status = 400


class BodyTooLarge(RequestRefused):
    status = 413


class SignatureInvalid(RequestRefused):
    """No signature, or one the signing secret did not make: check SLACK_SIGNING_SECRET."""

    status = 401


class TimestampInvalid(RequestRefused):
    """X-Slack-Request-Timestamp is not a number, or too far from now: check the clock."""

    status = 401


class PayloadUnreadable(RequestRefused):
    """A signed body that does not parse, or lacks what every request of its kind carries."""


@dataclass(frozen=True)
class SignedRequest:
    body: str  # the raw body, as signed
    timestamp: int
    retry: int  # X-Slack-Retry-Num: 0 on a first delivery


def check_length(content_length: str | None, limit: int) -> int:
    """The announced body length, refused before any of the body is read when over `limit`."""
    if not content_length:
        return 0
    if not content_length.isdigit():
        raise PayloadUnreadable("Content-Length is not a number")
    length = int(content_length)
    if length > limit:
        raise BodyTooLarge(f"the body is {length} bytes; Slack's requests are under {limit}")
    return length


def admit(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> SignedRequest:
    """The request if Slack signed it and Bolt can read it; `headers` have lower-case names."""
    timestamp = verify(body, headers, secret, now)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadUnreadable("the body is not UTF-8") from None
    check_shape(parse(text, headers.get("content-type")))
    retry = headers.get("x-slack-retry-num", "0")
    if not _DIGITS.fullmatch(retry):
        raise PayloadUnreadable("X-Slack-Retry-Num is not a number")
    return SignedRequest(text, timestamp, int(retry))


def verify(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> int:
    """Slack's v0 signature (HMAC-SHA256 of `v0:timestamp:body`); the timestamp when it holds."""
    stamp = headers.get("x-slack-request-timestamp", "")
    if not _DIGITS.fullmatch(stamp):
        raise TimestampInvalid("X-Slack-Request-Timestamp is not a whole number of seconds")
    if abs(now - int(stamp)) > SIGNATURE_WINDOW:
        raise TimestampInvalid(
            f"X-Slack-Request-Timestamp is {int(now) - int(stamp)} s from this host's clock; "
            f"Slack's signatures are accepted for {SIGNATURE_WINDOW} s (is the clock right?)"
        )
    signature = headers.get("x-slack-signature", "")
    expected = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    if not _SIGNATURE.fullmatch(signature) or not hmac.compare_digest(
        signature[3:], expected.hexdigest()
    ):
        raise SignatureInvalid("the request is not signed with SLACK_SIGNING_SECRET")
    return int(stamp)


def parse(body: str, content_type: str | None) -> dict[str, Any]:
    """The body as Bolt parses it (slack_bolt.request.internals.parse_body), or refused."""
    if not body:
        return {}
    media_type = (content_type or "").split(";")[0]  # as Bolt reads it: no spaces stripped
    try:
        if media_type == "application/json" or body.startswith("{"):
            parsed: object = json.loads(body)
        else:
            form = dict(parse_qsl(body, keep_blank_values=True))
            parsed = json.loads(form["payload"]) if "payload" in form else form
    except ValueError:  # JSONDecodeError included
        raise PayloadUnreadable("the body or its payload is not valid JSON") from None
    except RecursionError:
        raise PayloadUnreadable("the body or its payload nests deeper than JSON is read") from None
    if not isinstance(parsed, dict):
        raise PayloadUnreadable("the payload is not a JSON object")
    return parsed


# What Bolt's context and matchers read without checking, and what the listeners read: a field
# that is there must have one of these types. Slack sends `team` and `enterprise` as null for
# an org-wide install; any other null makes Bolt fail.
_FIELDS: dict[str, tuple[type, ...]] = {
    "team": (dict, str, type(None)),
    "enterprise": (dict, str, type(None)),
    "user": (dict, str),
    "channel": (dict, str),
    "container": (dict,),
    "message": (dict,),
    "view": (dict,),
    "event": (dict,),
    "state": (dict,),
    "authorizations": (list,),
    "actions": (list,),
    "type": (str,),
}
# Fields every request of a kind carries (Slack's payload reference); kinds not listed here
# are not handled and Bolt answers them 404.
_NESTING = 4  # Slack puts an `event` or `authorizations` one level down, never deeper
_SLASH_COMMAND = ("command", "user_id", "channel_id", "team_id")


def check_shape(payload: Mapping[str, Any]) -> None:
    """Refuse a payload Bolt or a listener would fail on (a 500) instead of answering."""
    _check_fields(payload, "", 0)
    if "command" in payload:
        missing = [name for name in _SLASH_COMMAND if not payload.get(name)]
        if missing:
            raise PayloadUnreadable(f"a slash command without {', '.join(missing)}")
    if payload.get("type") == "block_actions":
        user, actions = payload.get("user"), payload.get("actions")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            raise PayloadUnreadable("a block_actions payload without `user.id`")
        if not actions or not all(
            isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions
        ):
            raise PayloadUnreadable("a block_actions payload without actions with action_ids")


def _check_fields(payload: Mapping[str, Any], where: str, depth: int) -> None:
    """`_FIELDS` in the payload, and in `event` and each of `authorizations`, which Bolt reads
    as payloads of their own (to any depth: so no deeper than Slack nests them)."""
    if depth > _NESTING:
        raise PayloadUnreadable(f"`{where}` nests deeper than Slack's payloads")
    for name, types in _FIELDS.items():
        if name in payload and not isinstance(payload[name], types):
            raise PayloadUnreadable(f"`{where}{name}` is not what Slack sends there")
    nested = [("event.", payload.get("event"))] if "event" in payload else []
    nested += [("authorizations[].", entry) for entry in payload.get("authorizations") or []]
    for prefix, inner in nested:
        if not isinstance(inner, dict):
            raise PayloadUnreadable(f"`{where}{prefix.rstrip('.[]')}` holds a non-object")
        _check_fields(inner, where + prefix, depth + 1)
