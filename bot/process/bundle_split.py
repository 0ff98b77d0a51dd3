"""A large support bundle's node probes read and reduced by two processes, not one.

Why: a bundle that holds only the tables (one assembled by hand, or written before
`peer-tables.json`) costs, at 5,000 nodes, splitting and hashing 75 million peer-table entries
(about 25 s of one core, two thirds of its diagnose), while the machine's other cores wait. Each
worker process opens the bundle with a reader of its own, reads its share of the nodes one at a
time and reduces their tables against the same wanted peers (`PeerTableReducer`), and hands back
per node what `collect.probe_nodes` takes from a bundle's `peer-tables.json`: `ReducedResult`s
for the tables (small), the other outputs as they are. So `probe_nodes` runs unchanged, and the
evidence is the one a single reader gives.

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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

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

    def run_each(
        self,
        commands: Mapping[str, Sequence[Sequence[str]]],
        timeout: float | None = None,
        facts: str | None = None,
    ) -> Iterator[tuple[str, list[CommandResult] | Exception]]:
        if multiprocessing.current_process().daemon:  # a serve worker may start no process
            yield from self.reader.run_each(commands, timeout, facts)
            return
        wanted = peers_wanted(self.reader.list_nodes()) if facts else None
        if wanted is None or wanted_digest(wanted) != facts:
            yield from self.reader.run_each(commands, timeout, facts)
            return
        names = list(commands)
        argvs = [tuple(a) for a in next(iter(commands.values()), [])]
        if any(tuple(a) != b for n in names for a, b in zip(commands[n], argvs, strict=True)):
            yield from self.reader.run_each(commands, timeout, facts)  # not the probe set
            return
        share = dataclasses.replace(self.reader.limits, shares=self.workers)
        chunks = [names[i : i + self.chunk] for i in range(0, len(names), self.chunk)]
        done: set[str] = set()
        try:
            with ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_start,
                initargs=(str(self.reader.path), share, facts, wanted, argvs),
            ) as pool:
                for results, noted in pool.map(_read_chunk, chunks):
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
