"""Keeping secrets and floods out of the audit log.

Applied to every string stored in an event (`bot.redaction` does the recognising), and capped, so
a token echoed by a node or typed into chat never reaches the database and one runaway output
cannot fill it. The other exits (Slack, the terminal, reports, bundles, logs) redact again on the
way out, which also covers events stored before a pattern was added.
"""

from __future__ import annotations

from typing import Any

from flannel_bot.redaction import redact
from flannel_bot.redaction import scrub as scrub_with

MAX_TEXT = 16 * 1024

__all__ = ["MAX_TEXT", "cap", "redact", "scrub"]


def cap(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not kept]"


def _stored(text: str) -> str:
    # `redact` looked up here at each call: bench/report_1m.py memoises it in this module
    return cap(redact(text))


def scrub(value: Any) -> Any:
    """Redact and cap every string inside a JSON-like value, and mask values of keys that name a
    secret."""
    return scrub_with(value, _stored)
