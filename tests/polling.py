"""Looking again until the cluster shows a change, for tests that play a kubelet or controller.

The client does not wait (the engine's checks keep their own deadline); a test that changes
status in another thread, or a lab whose DaemonSet controller recreates a pod, polls the client's
reads with `poll` instead. The deadline is kept on an injectable clock, so a timeout is tested
without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from flannel_bot.ports.clock import Clock, SystemClock
from flannel_bot.ports.cluster import PodInfo

T = TypeVar("T")


class PollTimeout(AssertionError):
    """`until` never held within the timeout; `last_seen` is the last value read."""

    def __init__(self, message: str, last_seen: object) -> None:
        super().__init__(message)
        self.last_seen = last_seen


def poll(
    read: Callable[[], T],
    until: Callable[[T], bool],
    timeout: float,
    interval: float = 0.05,
    clock: Clock | None = None,
) -> T:
    """`read()` at once, then every `interval` seconds until `until(value)` holds (that value
    is returned) or `timeout` has passed (PollTimeout with the last value)."""
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout}")
    clock = clock or SystemClock()
    deadline = clock.now() + timedelta(seconds=timeout)
    while True:
        value = read()
        if until(value):
            return value
        remaining = (deadline - clock.now()).total_seconds()
        if remaining <= 0:
            raise PollTimeout(f"not so within {timeout:g}s; last saw: {value!r:.500}", value)
        clock.sleep(min(interval, remaining))


def newest_ready(pods: list[PodInfo], excluded: frozenset[str] = frozenset()) -> PodInfo | None:
    """The newest Ready, Running, not terminating pod, skipping `excluded` (a deleted one)."""
    ready = [
        p
        for p in pods
        if p.name not in excluded and not p.deletion and p.ready and p.phase == "Running"
    ]
    return max(ready, key=lambda p: p.creation) if ready else None
