"""A large support bundle's pod logs read and scanned by a second process while this one reads
the pods.

Why: an API-only diagnose of a 5,000-node bundle reads 10,000 logs (about 0.25 s) and scans them
with the catalogue (about 0.45 s) only after it has decoded 150,000 pods (1.6 s), while the
machine's other core waits. The logs it reads are those of flannel's, kube-proxy's and the
cluster DNS's pods, which live in kube-system and kube-flannel: a worker process reads those
namespaces' pods (a few percent of the pods), works out the logs `collect` will ask for
(`log_jobs`), and reads and scans them with a reader of its own.

`collect` takes them only when it asks for exactly those logs with the same tail, and the
bytes and seconds their reading took fit this reader's budget (they are then spent here, and
what the worker's reader noted while reading them, gaps and lists unread, is taken in as if
read here). Otherwise, or when the worker cannot start or fails, the logs are read here as
without it. So the evidence is the one a single reader gives.

Used from `LOGS_FROM` nodes, with more than one CPU, and never inside a daemonic process (a
serve worker, which may not start children). The worker is started by a forkserver, so a
program that calls this must guard its main module, as for `bundle_split`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

from flannel_bot.diagnosis.catalogue import CATALOGUE
from flannel_bot.diagnosis.collect import LogKey, log_jobs, read_log
from flannel_bot.diagnosis.evidence import FLANNEL_NAMESPACES, Evidence, ScannedLog, log_places
from flannel_bot.executors.bundle import BundleReader, Limits

LOGS_FROM = 1000  # nodes from which the logs are read ahead

log = logging.getLogger(__name__)


class _Read(NamedTuple):
    """What the worker read: the logs it asked for, each as read and scanned, what its reader
    noted meanwhile (new gaps, lists unread), and the bytes and seconds the reading took."""

    log_lines: int
    keys: list[LogKey]
    logs: list[ScannedLog]
    gaps: list[str]
    unread: frozenset[tuple[str, str]]
    spent_bytes: int
    spent_seconds: float


class LogsAhead:
    """`collect.LogsAhead` for a `BundleReader`: `start` sets a worker reading, `take` hands
    its logs to `collect`, `close` stops it whatever happened."""

    def __init__(self, reader: BundleReader, log_lines: int) -> None:
        self.reader = reader
        self.log_lines = log_lines
        self._pool: ProcessPoolExecutor | None = None
        self._future: Future[_Read | None] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(
        cls, reader: BundleReader, log_lines: int, from_nodes: int | None = None
    ) -> LogsAhead | None:
        """The worker started on the bundle's logs, unless the bundle has fewer than
        `from_nodes` nodes (default `LOGS_FROM`) or the machine no core to spare (then None:
        `collect` reads them itself)."""
        from_nodes = LOGS_FROM if from_nodes is None else from_nodes
        if (os.cpu_count() or 1) < 2 or multiprocessing.current_process().daemon:
            return None
        if reader.logs_read or len(reader.list_nodes()) < from_nodes:
            return None  # read again, logs come from the reader's cache, not the budget
        ahead = cls(reader, log_lines)
        # started on a thread: handing the worker its task waits for the forkserver (a quarter
        # of a second), which the pods need not
        ahead._thread = threading.Thread(target=ahead._begin, name="bundle-logs-ahead", daemon=True)
        ahead._thread.start()
        return ahead

    def _begin(self) -> None:
        try:
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("forkserver")
            )
            self._future = self._pool.submit(
                _read_ahead, str(self.reader.path), self.reader.limits, self.log_lines
            )
        except (OSError, RuntimeError) as exc:
            log.warning("the bundle's log reader could not start (%s)", exc)

    def take(self, keys: Sequence[LogKey], log_lines: int) -> Mapping[LogKey, ScannedLog] | None:
        if self._thread is not None:
            self._thread.join()
        if self._future is None:
            return None
        try:
            read = self._future.result()
        except Exception as exc:  # the worker died or raised: the logs are read here
            log.warning("reading the bundle's logs in another process failed (%s)", exc)
            return None
        if read is None or read.log_lines != log_lines or read.keys != list(keys):
            return None
        if not self.reader.budget.take_spent(read.spent_bytes, read.spent_seconds):
            return None
        self.reader.absorb(read.gaps, {}, frozenset(), read.unread)
        return dict(zip(read.keys, read.logs, strict=True))

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _read_ahead(path: str, limits: Limits, log_lines: int) -> _Read | None:
    """In the worker: flannel's namespaces' pods, then the logs `collect` will ask for of them,
    read and scanned; None when reading them met a limit of the budget (the parent then reads
    them itself and meets it as a single reader would)."""
    reader = BundleReader(path, limits, cache_probes=False)
    ev = Evidence()
    for namespace in reader.namespaces():  # in the order a list of every namespace reads them
        if namespace in FLANNEL_NAMESPACES:
            ev.pods.extend(reader.list_pods(namespace))
    keys = log_jobs(ev)
    places = log_places(ev)
    gaps, over, _, unread = reader.noted()
    bytes_before, seconds_before = reader.budget.spent()
    logs = []
    for key in keys:
        _, text = read_log(reader, key, log_lines)
        where = places[(key[0], key[1])][1]
        logs.append(ScannedLog(where, text, CATALOGUE.found_in(where, text) if text else ()))
    gaps_after, over_after, _, unread_after = reader.noted()
    if over_after != over:
        return None
    bytes_after, seconds_after = reader.budget.spent()
    return _Read(
        log_lines,
        keys,
        logs,
        gaps_after[len(gaps) :],
        unread_after - unread,
        bytes_after - bytes_before,
        seconds_after - seconds_before,
    )
