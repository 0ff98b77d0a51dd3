"""One active replica: leader election through a Kubernetes Lease (coordination.k8s.io/v1).

The leader renews `spec.renewTime` every `retry` seconds; a standby takes the Lease over only
when it has not been renewed for `duration` seconds. Every write carries the resourceVersion it
read, so two standbys racing for an expired Lease cannot both win (the loser gets 409). A leader
that cannot renew for `renew_deadline` seconds stops leading before anyone else may start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flannel_bot.errors import ApiError, BotError
from flannel_bot.ports.clock import Clock

log = logging.getLogger(__name__)


class LeaseApi(Protocol):
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


def parse_time(text: str) -> datetime:
    """A Lease time as servers write it: with `Z` or `+00:00`, with or without microseconds."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def micro(at: datetime) -> str:
    """A Lease's MicroTime."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        clock: Clock,
        duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry: float = 2.0,
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.clock = clock
        self.duration, self.renew_deadline, self.retry = duration, renew_deadline, retry
        self.leading = False

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        now = self.clock.now()
        lease = self.api.get_lease(self.namespace, self.name)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": micro(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": micro(now), "leaseTransitions": 0},
            }
            return self._write(lambda: self.api.create_lease(self.namespace, body))
        current = dict(lease.get("spec") or {})
        holder = current.get("holderIdentity")
        renewed = current.get("renewTime")
        expired = (
            renewed is None
            or parse_time(str(renewed))
            + timedelta(seconds=float(current.get("leaseDurationSeconds") or self.duration))
            < now
        )
        if holder != self.identity and holder and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": {**current, **spec}}
        return self._write(lambda: self.api.replace_lease(self.namespace, self.name, body))

    def _write(self, write: Callable[[], object]) -> bool:
        try:
            write()
        except ApiError as exc:
            if exc.code == 409:  # another replica wrote first
                return False
            raise
        return True

    def run(self, lead: Callable[[threading.Event], None], stop: threading.Event) -> None:
        """Wait for the Lease, then call `lead(lost)` in a thread and keep renewing; `lost` is
        set when renewing fails for `renew_deadline` seconds (or `stop` is set)."""
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    break
            except BotError as exc:
                log.warning("leader election: %s", exc)
            stop.wait(self.retry)
        if stop.is_set():
            return
        self.leading = True
        log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
        lost = threading.Event()
        leader = threading.Thread(target=lead, args=(lost,), name="leader", daemon=True)
        leader.start()
        last_ok = self.clock.now()
        while not stop.is_set():
            stop.wait(self.retry)
            try:
                ok = self.try_acquire_or_renew()
            except BotError as exc:
                log.warning("renewing the Lease failed: %s", exc)
                ok = False
            if ok:
                last_ok = self.clock.now()
            elif (self.clock.now() - last_ok).total_seconds() >= self.renew_deadline:
                log.error("lost the Lease %s/%s; stopping", self.namespace, self.name)
                break
        self.leading = False
        lost.set()
        leader.join(timeout=30)
        if stop.is_set():
            self.release()

    def release(self) -> None:
        """Give the Lease up on a clean stop (SIGTERM in a rolling update), so a standby takes
        over at its next attempt instead of waiting `duration` for the Lease to expire."""
        try:
            lease = self.api.get_lease(self.namespace, self.name)
            spec = dict((lease or {}).get("spec") or {})
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            spec.update(
                holderIdentity="", leaseDurationSeconds=1, renewTime=micro(self.clock.now())
            )
            self._write(
                lambda: self.api.replace_lease(self.namespace, self.name, {**lease, "spec": spec})
            )
        except BotError as exc:  # it expires by itself; this only makes the handover quicker
            log.warning("releasing the Lease failed: %s", exc)
            return
        log.info("released the Lease %s/%s", self.namespace, self.name)
