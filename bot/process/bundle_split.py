"""A large support bundle's node probes read and reduced by two processes, not one.

Why: a bundle that holds only the tables (one assembled by hand, or written before
`peer-tables.json`) costs, at 5,000 nodes, reading 6.9 GB of tables and recognising 75 million
peer-table entries in them (about 10 s of one core, most of its diagnose; 25 s before they were
walked in order), while the machine's other cores wait; one with them reads 105,000 small probe
files (about 3 s). Each
worker process opens the bundle with a reader of its own, reads its share of the nodes one at a
time and reduces their tables against the same wanted peers (`PeerTableReducer`), and hands back
per node what `collect.probe_nodes` takes from a bundle's `peer-tables.json`: `ReducedResult`s
for the tables (small), the other outputs as they are. So `probe_nodes` runs unchanged, and the
evidence is the one a single reader gives. `start` sets them reading before the caller reads
the API objects (they need only the nodes and flannel's ConfigMaps), so the probes are read while
the pods are.

The workers' readers share the bundle's read budget (each gets its part of `total_bytes`); what
they note (gaps, probes absent, lists unread) is handed to the parent's reader. Used only from
`SPLIT_FROM` probed nodes, with more than one CPU, and never inside a daemonic process (a serve
worker), which may not start children: there the single reader reads as before, as it does when
a worker cannot start (the rest of the nodes are then read here). The workers are started by a
forkserver, so a program that calls this must guard its main module (`if __name__ ==
"__main__"`), as multiprocessing asks; flannel-bot's commands and benches do.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from flannel_bot.diagnosis.collect import peer_reducer_of
from flannel_bot.diagnosis.peer_tables import (
    TABLES,
    PeersWanted,
    PeerTableReducer,
    peers_wanted,
    wanted_digest,
)
from flannel_bot.errors import BotError, NodeUnreachable
from flannel_bot.executors.bundle import BundleReader, Limits
from flannel_bot.ports.nodes import CommandResult, ReducedResult
from flannel_bot.ports.probes import PROBES, ProbeOutput

SPLIT_FROM = 1000  # probed nodes from which the probes are read by WORKERS processes
WORKERS = 2
CHUNK = 50  # nodes a worker reads per task: results stream back as each task ends

log = logging.getLogger(__name__)
_ID_OF = {p.argv: p.id for p in PROBES}
_worker: dict[str, Any] = {}


class SplitProbes:
    """`run_each` of a `BundleReader` over WORKERS processes when `probe_nodes` asks for the
    reduced tables (`facts=`); everything else is the reader's own."""

    def __init__(self, reader: BundleReader, workers: int = WORKERS, chunk: int = CHUNK) -> None:
        self.reader = reader
        self.workers = workers
        self.chunk = chunk
        self.peer_facts = reader.peer_facts  # so that probe_nodes asks for `facts`
        self._ahead: _Starting | None = None  # the workers' read begun by `start`

    @classmethod
    def of(cls, reader: BundleReader, split_from: int = SPLIT_FROM) -> BundleReader | SplitProbes:
        """The reader itself, unless the bundle is large enough and the machine has cores."""
        if (os.cpu_count() or 1) < 2:
            return reader
        if len(reader.probed_nodes(split_from)) < split_from:
            return reader
        return cls(reader)

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        return self.reader.run(node, argv, timeout, sudo)

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> dict[str, list[CommandResult] | Exception]:
        return self.reader.run_many(commands, timeout)

    def start(self, only: Sequence[str] = ()) -> None:
        """Start the workers reading the probes of every node (or of `only`) now, before the
        caller reads the API objects: they need only the nodes and flannel's ConfigMaps to
        reduce against, so the probes are read while the pods are. `run_each` then hands back
        what they read when it is asked for the same nodes and probes against the same peers;
        for anything else the early read is dropped and the nodes are read as asked."""
        if self._ahead is not None or multiprocessing.current_process().daemon:
            return
        reducer, nodes = peer_reducer_of(self.reader)
        if reducer is None:  # another backend: the tables are read whole, by one reader
            return
        names = list(only) or [n.name for n in nodes]
        argvs = [p.argv for p in PROBES]
        facts = wanted_digest(reducer.wanted)
        wanted = reducer.wanted
        # started on a thread: handing a worker its start-up data waits for the forkserver
        # (a quarter of a second), which the pods need not
        self._ahead = _Starting(lambda: self._begin(names, argvs, facts, wanted))

    def close(self) -> None:
        """Stop an early read that no `run_each` took (the caller failed before the probes)."""
        starting, self._ahead = self._ahead, None
        ahead = starting.read() if starting is not None else None
        if ahead is not None:
            ahead.pool.shutdown(wait=True, cancel_futures=True)

    def run_each(
        self,
        commands: Mapping[str, Sequence[Sequence[str]]],
        timeout: float | None = None,
        facts: str | None = None,
    ) -> Iterator[tuple[str, list[CommandResult] | Exception]]:
        starting, self._ahead = self._ahead, None
        ahead = starting.read() if starting is not None else None
        if multiprocessing.current_process().daemon:  # a serve worker may start no process
            yield from self.reader.run_each(commands, timeout, facts)
            return
        names = list(commands)
        first = next(iter(commands.values()), [])
        argvs = [tuple(a) for a in first]
        alike = all(
            commands[n] is first  # the one list probe_nodes gives every node
            or (
                len(commands[n]) == len(argvs)
                and all(tuple(a) == b for a, b in zip(commands[n], argvs, strict=True))
            )
            for n in names
        )
        if ahead is not None:
            if alike and ahead.asked == (names, argvs, facts):
                yield from self._taken(ahead, commands, timeout, facts)
                return
            ahead.pool.shutdown(wait=True, cancel_futures=True)  # read for something else
        wanted = peers_wanted(self.reader.list_nodes()) if facts else None
        if wanted is None or wanted_digest(wanted) != facts or not alike:
            yield from self.reader.run_each(commands, timeout, facts)  # not the probe set
            return
        begun = self._begin(names, argvs, facts, wanted)
        if begun is None:
            yield from self.reader.run_each(commands, timeout, facts)
            return
        yield from self._taken(begun, commands, timeout, facts)

    def _begin(
        self, names: list[str], argvs: list[tuple[str, ...]], facts: str, wanted: PeersWanted
    ) -> _Read | None:
        """The workers started on `names`, every chunk handed to them at once; None when they
        cannot start (the caller reads the nodes itself)."""
        share = dataclasses.replace(self.reader.limits, shares=self.workers)
        chunks = [names[i : i + self.chunk] for i in range(0, len(names), self.chunk)]
        try:
            pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_start,
                initargs=(str(self.reader.path), share, facts, wanted, argvs),
            )
        except (OSError, RuntimeError) as exc:
            log.warning("the bundle's probe workers could not start (%s)", exc)
            return None
        try:
            results = pool.map(_read_chunk, chunks)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            log.warning("the bundle's probe workers could not start (%s)", exc)
            pool.shutdown(wait=True, cancel_futures=True)
            return None
        return _Read((names, argvs, facts), pool, results)

    def _taken(
        self,
        read: _Read,
        commands: Mapping[str, Sequence[Sequence[str]]],
        timeout: float | None,
        facts: str | None,
    ) -> Iterator[tuple[str, list[CommandResult] | Exception]]:
        """The workers' results node by node as their chunks end; what they did not read (a
        worker died) is read here."""
        done: set[str] = set()
        try:
            for results, noted in read.results:
                self.reader.absorb(*noted)
                for node, outcome in results:
                    done.add(node)
                    if isinstance(outcome, str):  # the node is marked unreachable
                        yield node, NodeUnreachable(outcome, node=node)
                    else:
                        yield node, outcome
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            # a worker that could not start or died: the rest is read here, as without them
            log.warning(
                "reading the bundle's probes in %d processes failed (%s)", self.workers, exc
            )
            rest = {n: argv for n, argv in commands.items() if n not in done}
            yield from self.reader.run_each(rest, timeout, facts)
        finally:
            read.pool.shutdown(wait=True, cancel_futures=True)


class _Starting:
    """`SplitProbes._begin` run on a thread of its own; `read` waits for what it gave."""

    def __init__(self, begin: Callable[[], _Read | None]) -> None:
        self._begun: _Read | None = None
        self._thread = threading.Thread(
            target=self._run, args=(begin,), name="bundle-probe-workers", daemon=True
        )
        self._thread.start()

    def _run(self, begin: Callable[[], _Read | None]) -> None:
        self._begun = begin()

    def read(self) -> _Read | None:
        self._thread.join()
        return self._begun


@dataclasses.dataclass
class _Read:
    """The workers' read of some nodes: what was asked (names, argvs, facts), their pool and
    their results, chunk by chunk in the order of the names."""

    asked: tuple[list[str], list[tuple[str, ...]], str]
    pool: ProcessPoolExecutor
    results: Iterator[tuple[list[tuple[str, list[CommandResult] | str]], tuple[Any, ...]]]


def _start(
    path: str, limits: Limits, facts: str, wanted: PeersWanted, argvs: list[tuple[str, ...]]
) -> None:
    """A worker's reader and reducer, kept for all its tasks (the reducer learns the
    cluster's usual entries once)."""
    _worker.update(
        reader=BundleReader(path, limits, cache_probes=False),
        reducer=PeerTableReducer(wanted),
        facts=facts,
        argvs=argvs,
    )


def _read_chunk(
    nodes: list[str],
) -> tuple[list[tuple[str, list[CommandResult] | str]], tuple[Any, ...]]:
    reader: BundleReader = _worker["reader"]
    reducer: PeerTableReducer = _worker["reducer"]
    argvs: list[tuple[str, ...]] = _worker["argvs"]
    out: list[tuple[str, list[CommandResult] | str]] = []
    commands = {n: [list(a) for a in argvs] for n in nodes}
    for node, outcome in reader.run_each(commands, None, facts=_worker["facts"]):
        if isinstance(outcome, BotError):
            out.append((node, str(outcome)))
            continue
        assert not isinstance(outcome, Exception)
        out.append((node, [_reduced(reducer, node, r) for r in outcome]))
    return out, reader.noted()


def _reduced(reducer: PeerTableReducer, node: str, result: CommandResult) -> CommandResult:
    """A table as `peer-tables.json` would give it, reduced here; anything else as it is."""
    probe_id = _ID_OF.get(result.argv)
    if probe_id not in TABLES or isinstance(result, ReducedResult):
        return result
    out = ProbeOutput(result.exit_code, result.stdout, result.stderr)
    table = reducer.reduce(probe_id, out, node)
    if table is None:
        return result
    return ReducedResult(
        node,
        result.argv,
        table.out.exit_code,
        table.out.stdout,
        table.out.stderr,
        entries=table.entries,
        missing=tuple(table.missing),
    )
