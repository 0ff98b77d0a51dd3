"""POST /slack/events in HTTP mode: the gate, then Bolt.

The body is read only up to `[slack] max_body_bytes` (the server has refused a longer one from
its head already), checked by bot.slack.gate (signature and timestamp first, then a payload Bolt
can read), and only then handed to Bolt. A refusal is logged with its reason and counted, never
with the body: the body is the sender's text, signed or not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from slack_bolt.request import BoltRequest

from flannel_bot.process.metrics import METRICS
from flannel_bot.slack import gate
from flannel_bot.slack.app import SlackAdapter
from flannel_bot.slack.server import WsgiApp

log = logging.getLogger(__name__)


def slack_events(adapter: SlackAdapter, clock: Callable[[], float] = time.time) -> WsgiApp:
    """POST /slack/events: the gate (length, signature, a payload Bolt can read), then Bolt."""
    settings = adapter.settings

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.perf_counter()
        headers = request_headers(environ)
        try:
            body = read_body(environ, settings.max_body_bytes)
            request = gate.admit(body, headers, settings.signing_secret, clock())
        except gate.RequestRefused as refused:
            log.info("refused a request to /slack/events (%d): %s", refused.status, refused)
            METRICS.slack_refused.labels(status=str(refused.status)).inc()
            return answer(start_response, refused.status, f"{refused}\n")
        as_sent: dict[str, str | Sequence[str]] = dict(headers)
        bolt = adapter.bolt.dispatch(BoltRequest(body=request.body, headers=as_sent))
        listed = [(k, v) for k, vs in bolt.headers.items() for v in vs]
        listed = [(k, v) for k, v in listed if k.lower() != "content-length"]
        METRICS.slack_ack.observe(time.perf_counter() - began)
        return answer(start_response, bolt.status, bolt.body.encode(), listed)

    return application


def request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers by lower-case name, as Bolt and the gate read them."""
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """At most `limit` bytes: refused from the announced length before reading, and a body
    with no length (the server has read it whole) is read one byte past the limit at most."""
    stream = environ["wsgi.input"]
    length = gate.check_length(environ.get("CONTENT_LENGTH"), limit)
    if length:
        return bytes(stream.read(length))
    body = bytes(stream.read(limit + 1))
    gate.check_length(str(len(body)), limit)
    return body


def answer(
    start_response: Callable[..., Any],
    status: int,
    body: str | bytes,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    """A whole answer with its length; plain text unless `headers` say otherwise."""
    data = body.encode() if isinstance(body, str) else body
    phrase = HTTPStatus(status).phrase
    listed = headers or [("Content-Type", "text/plain; charset=utf-8")]
    start_response(f"{status} {phrase}", [*listed, ("Content-Length", str(len(data)))])
    return [data]
