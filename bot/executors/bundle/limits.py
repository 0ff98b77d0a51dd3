"""How much of a support bundle its reader takes (`Limits`), and what it has taken (`Budget`).

Why: a bundle is someone else's directory, read inside the bot. Unbounded, one file could hold
the reader forever or take the machine's memory: a link to /dev/zero, a 2 GB sparse log, a
million pods, JSON nested 100,000 deep. Each bound turns such a file into a gap that names it,
and the diagnosis answers with the rest.

Why these defaults: a bundle of the largest cluster Kubernetes supports (5,000 nodes, 150,000
pods, 10,000 namespaces) has files well within the per-file bounds. The total and the time bound
what one diagnosis may hold, as the evidence costs about what its files weigh: a VXLAN cluster's
bundle grows with nodes squared (6.9 GB at 5,000 nodes), so past about 3,900 fully probed nodes
the later files are refused, and `diagnose NODE...` reads only those nodes' probes. Why
constants and not settings: the executors do not read settings (the layers), and a bundle is a
record, not a deployment to tune; tests and benches pass their own `Limits`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flannel_bot.errors import BundleFileRefused


@dataclass(frozen=True)
class Limits:
    # one list file (pods.json, events.json, ...): refused above it, as a cut list is not JSON;
    # 150,000 pods as kubectl writes them (about 5 KB each) in one namespace fit
    list_bytes: int = 1 << 30
    # one logs.txt or previous log: above it, only its last `log_bytes` are read (diagnose reads
    # a log's last lines anyway); the kubelet rotates a container's log at 10 MiB by default
    log_bytes: int = 16 << 20
    # one probe output (.txt, .err) or errors.txt: refused above it, as a cut table (routes,
    # iptables) would read as missing entries; the SSH executor keeps 1 MiB of each by default
    output_bytes: int = 64 << 20
    # an exit code or an UNREACHABLE note
    note_bytes: int = 64 << 10
    # every file read, together: later files are refused
    total_bytes: int = 4 << 30
    # items of one kind (pods, events, ...) in every namespace's list, together: the list that
    # reaches it is cut there, and later lists of that kind are refused. Per kind, so that a
    # namespace of a million pods leaves flannel's DaemonSet and events readable; Kubernetes
    # supports 150,000 pods
    objects: int = 300_000
    # JSON nesting: a Kubernetes list nests about 15 deep. Of a list read as JSON: a pods.json
    # decoded whole into typed records skips, never builds, the fields the bot does not read
    depth: int = 100
    # time spent reading and parsing files, summed over the reader's life (it reads each file
    # once); later files are refused. A 5,000-node bundle reads in about 45 s
    seconds: float = 120.0
    # entries of the bundle's top directory looked at for namespaces (Kubernetes supports 10,000)
    entries: int = 20_000
    # readers that share `total_bytes` (worker processes reading a large bundle's probes): each
    # may read its part of it
    shares: int = 1


def size(count: int) -> str:
    """Bytes as people read them: 2.0 GiB, 16 MiB, 812 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            value = count / (1 << shift)
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{count} bytes"


class Budget:
    """What one reader has spent of its `Limits`: bytes, objects and seconds, shared by all its
    reads (thread-safe). Spending past a limit raises `BundleFileRefused(budget=True)`."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.RLock()
        self._bytes = 0
        self._objects: dict[str, int] = {}
        self._seconds = 0.0
        self._started: float | None = None
        self._depth = 0

    def timed(self, rel: str) -> _Timed:
        """Counts the time spent inside against `seconds`; refuses `rel` if none is left."""
        return _Timed(self, rel)

    def _start(self, rel: str) -> None:
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._started = self._clock()
        try:
            self.check_time(rel)
        except BundleFileRefused:
            self._stop()
            raise

    def _stop(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._started is not None:
                self._seconds += self._clock() - self._started
                self._started = None

    def check_time(self, rel: str) -> None:
        with self._lock:
            running = self._clock() - self._started if self._started is not None else 0.0
            if self._seconds + running > self.limits.seconds:
                raise BundleFileRefused(
                    rel,
                    f"reading the bundle took more than its {self.limits.seconds:g} s; "
                    f"`diagnose NODE...` reads only those nodes' probes",
                    budget=True,
                )

    def take_bytes(self, rel: str, count: int) -> None:
        """Spends `count` bytes of the total, or refuses `rel` without spending any."""
        with self._lock:
            total, shares = self.limits.total_bytes, max(self.limits.shares, 1)
            if self._bytes + count > self._byte_share():
                part = f" (this reader's 1/{shares} of it)" if shares > 1 else ""
                raise BundleFileRefused(
                    rel,
                    f"the files read before it reach the bundle's {size(total)}{part}; "
                    f"`diagnose NODE...` reads only those nodes' probes",
                    budget=True,
                )
            self._bytes += count

    def _byte_share(self) -> int:
        """This reader's part of the bundle's total bytes (all of it, unless shared)."""
        return self.limits.total_bytes // max(self.limits.shares, 1)

    def spent(self) -> tuple[int, float]:
        """(bytes, seconds) spent so far."""
        with self._lock:
            return self._bytes, self._seconds

    def take_spent(self, count: int, seconds: float) -> bool:
        """Spend what another reader spent reading files for this one (logs read ahead),
        unless that goes past a limit: then spend nothing and say so (False), and the caller
        reads the files itself, meeting the limit where a single reader would."""
        with self._lock:
            if self._bytes + count > self._byte_share():
                return False
            if self._seconds + seconds > self.limits.seconds:
                return False
            self._bytes += count
            self._seconds += seconds
            return True

    def objects_left(self, kind: str) -> int:
        with self._lock:
            return max(self.limits.objects - self._objects.get(kind, 0), 0)

    def take_objects(self, kind: str, count: int) -> None:
        with self._lock:
            self._objects[kind] = self._objects.get(kind, 0) + count


class _Timed:
    """`with budget.timed(rel):` a plain context manager, as every file read enters one."""

    __slots__ = ("_budget", "_rel")

    def __init__(self, budget: Budget, rel: str) -> None:
        self._budget = budget
        self._rel = rel

    def __enter__(self) -> None:
        self._budget._start(self._rel)

    def __exit__(self, *exc: object) -> None:
        self._budget._stop()
