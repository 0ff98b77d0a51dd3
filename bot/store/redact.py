"""Keeping secrets and floods out of the audit log.

Applied to every string stored in an event, so a token echoed by a node or typed into chat never
reaches the database, Slack or a report.
"""

from __future__ import annotations

import re
from typing import Any

MAX_TEXT = 16 * 1024

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
        ),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"), "[REDACTED SLACK TOKEN]"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{8,}"), "[REDACTED SLACK TOKEN]"),
    (
        re.compile(r"(?i)\b(authorization:\s*)?bearer\s+[A-Za-z0-9._~+/=-]{8,}"),
        r"\1Bearer [REDACTED]",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"), "[REDACTED JWT]"),
    (
        re.compile(
            r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*|\s+)(\"[^\"]*\"|'[^']*'|\S+)"
        ),
        r"\1\2[REDACTED]",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def cap(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not kept]"


def scrub(value: Any) -> Any:
    """Redact and cap every string inside a JSON-like value."""
    if isinstance(value, str):
        return cap(redact(value))
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
