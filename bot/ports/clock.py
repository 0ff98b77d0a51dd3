"""Time, injected so that expiry, retries and timeouts are tested without sleeping."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def iso(moment: datetime) -> str:
    """Fixed-width UTC timestamps, so they also sort correctly as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """What `iso` wrote, back as an aware datetime. `iso`'s own shape is read by
    `datetime.fromisoformat` (a twentieth of `strptime`'s cost: an audit report over a window
    reads every event's time); anything else goes to `strptime`, which decides what is valid."""
    if (
        len(text) == 27
        and text[26] == "Z"
        and text[19] == "."
        and text[:4].isdigit()
        and text[20:26].isdigit()
        and text[4:19:3] == "--T::"
    ):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
