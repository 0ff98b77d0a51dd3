"""Audit reports over an audit log of a million events: time and peak memory, side by side.

Builds a real flannel-bot SQLite audit log (`--events`, default 1,000,000, over `--days` 30), or
reuses one (`--db PATH`: built there if the file holds no events yet, kept afterwards), then
measures, each case in a fresh process so its peak memory is its own:

  Store.verify()             the whole hash chain (and, "before", as it was walked before the
                             fast walk: a dict per event, hashed from str)
  thread=<ts>  md / html     the record of one incident thread (a destructive run in Slack)
  run=N  md                  the record of that run
  since=24h  html            the last day
  read rows                  one pass of Store.iter_events_matching over the whole log, each
                             row decoded to an Event: what an export reads (twice: the tally of
                             its first line, then the lines), its floor (only with --exports)
  export  jsonl / csv        the whole log streamed to a temporary file as the CLI writes it
                             (Service.export, Renderer.write_export; its size is shown;
                             only with --exports), and its time ÷ reading the rows

Reports check the chain from the newest chained `audit_verified` marker (Store.verify_recent); the
"before" cases run the same report with today's path before markers, the whole chain walked the
old way, in the same run. The log is given what the serve process leaves: a marker recorded with
a posted head, then AFTER_MARKER events (once per log file; a reused file keeps them).

Every report goes through the real code path, `Service.report(selection)` then
`Renderer.report(data, fmt)`, with timers around the calls it makes (the store's reads before
selecting, whichever of `LOADS` this version of the store has and calls; report.select;
store.verify; report.build) and around the rendering, so each report splits into: select+build (of
which "load": reading runs and events into objects), the chain verification the report does, and
rendering (and, for the exports, writing the file). A digest of the report code path's files is
printed, and the run fails if they change while it runs.

Memory is RSS from /proc/self/status (Linux) in the case's own process: VmHWM, the peak that
getrusage's ru_maxrss reports, but reset before each phase by writing 5 to /proc/self/clear_refs, so
every phase gets its own peak (ru_maxrss only ever grows, and a child inherits its parent's across
fork and exec, which would hide the case's peak under the log builder's). Shown: the case's peak
above its RSS once the Service is built, each phase's peak above the RSS it started with, and the
RSS the load leaves behind for the rest of the report. "gc" is the time spent in Python's cyclic
garbage collector (gc.callbacks) during the case. Each case runs once; nothing is asserted about
time or memory.

How the log is built: the real Service and Engine (tests/fakes.py's fake cluster with the lab's
nodes and flannel pods; node probes answered with outputs recorded on real lab nodes,
tests/fixtures/lab-probes-healthy.json) play each kind of Slack thread once per node: diagnose
(healthy, or with a node whose flannel lost its subnet.env), status, plan, a flannel.restart-pods
run that is approved and verified, one that fails (with a refused self-approval first), one that
is denied, and node.check runs (18 probe outputs each). Those events and runs rows become
templates: users, Slack channel/thread/user ids, run ids and times are placeholders, filled in for
each of the threads spread over `--days` (several users, channels and threads at once, in time
order). Every event then goes through exactly what `Tx.record` does (scrub, the store's JSON
encoding, `event_hash` chained from GENESIS; scrub's result is memoised per JSON text, being a pure
function of it) and is inserted with executemany, a transaction per 100,000 events, `chain_head`
updated in each. The first 2,000 events are also appended through the real `Tx.record` into
a scratch store and must be byte-identical, and `Store.verify()` must say OK, or the run fails.

About 11 minutes at the default size on 2 shared cores (building the log 1.5 of them, the two full
exports 6), about 7 GB of memory at the peak (the jsonl export); under a minute at 100,000 events.
Figures from one run on a shared VM vary by up to ~1.5x for the same work.

Usage (from the repo root):
  .venv/bin/python bench/report_1m.py [--events 1000000] [--days 30] [--db PATH] [--seed 1]
                                      [--exports]
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import functools
import gc
import hashlib
import heapq
import itertools
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flannel_bot.executors.kube import parse_node, parse_pod
from flannel_bot.lab import objects
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.clock import iso, parse_iso
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.ports.probes import PROBES
from flannel_bot.ports.store import ChainReport, EventFilter, EventKind, Requester
from flannel_bot.render import Renderer
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.policy import Policy
from flannel_bot.runs.registry import Registry
from flannel_bot.service import report as report_module
from flannel_bot.service.clusters import Cluster, Clusters
from flannel_bot.service.handler import Reply, Service
from flannel_bot.store import SqliteStore
from flannel_bot.store import redact as redact_module
from flannel_bot.store.audit import GENESIS, event_hash, verify_rows
from flannel_bot.store.crosscheck import FACTS, RUN_COLUMNS, WATCHED, ChainedRuns
from flannel_bot.store.database import (
    _json,  # the store's own encoding of `source` and `data`
    _rows,  # how the store read rows before the fast walk
)
from flannel_bot.store.redact import scrub

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests` is not installed; the fake cluster lives there
    sys.path.insert(0, str(REPO))

from tests.fakes import FakeClock, FakeCluster  # noqa: E402

# -- placeholders in the templates -----------------------------------------------------------------

REQ, APP = "zreqz", "zappz"  # the requester and the approver
REQ_ID, APP_ID = "UZREQZ", "UZAPPZ"  # their Slack user ids
CHANNEL, THREAD, MESSAGE = "CZCHANZ", "ZTHREADZ", "ZMESSAGEZ"  # Slack channel, thread, message ts
RUN_ID = 424242424  # the run's id (the capture store's runs start there)
PLACEHOLDERS = (REQ, APP, REQ_ID, APP_ID, CHANNEL, THREAD, MESSAGE, str(RUN_ID))
CAPTURE_START = datetime(2000, 1, 1, tzinfo=UTC)
CAPTURED_TIME = re.compile(r"2000-01-0\dT\d\d:\d\d:\d\d\.\d{6}Z")

FIXTURE = json.loads((REPO / "tests" / "fixtures" / "lab-probes-healthy.json").read_text())
PROBE_IDS = {p.argv: p.id for p in PROBES}
SPEC = LabSpec(name="rpt", nodes=3, underlay="172.31.248.0/24")
POD_SUFFIX = {"w1": "4xq7t", "w2": "m9c2d", "w3": "zt8wk"}
POLICY = Policy(groups={"operators": frozenset({REQ}), "approvers": frozenset({APP})})
RESTART = "flannel.restart-pods@1.2.0"

OPERATORS = ("alice", "erin", "frank", "grace", "ivan")
APPROVERS = ("bob", "carol", "dave", "heidi", "judy")
USER_IDS = {
    name: f"U0{i + 3}{name.upper():X<6}{i * 7 % 10}"
    for i, name in enumerate(sorted(OPERATORS + APPROVERS))
}
CHANNELS = {"C04NETOPS7": 5, "C05INCID3NT": 4, "C06PLATF0RM": 2, "C07ONCALL2": 3, "C08K8SPR0D": 1}

BATCH = 100_000  # events per transaction
REPLAYED = 2000  # events also appended through Tx.record and compared


# -- the cluster the templates are played on ------------------------------------------------------


class LabCluster(FakeCluster):
    """The unit tests' fake cluster with the lab's nodes and flannel pods, node probes answered
    with outputs recorded on real lab nodes, and optionally a node whose flannel lost its
    subnet.env until its flannel pod is restarted."""

    def __init__(self, clock: FakeClock, broken: str | None = None) -> None:
        super().__init__(clock, [n.name for n in SPEC.all_nodes()])
        self.nodes = [parse_node(objects.node(n)) for n in SPEC.all_nodes()]
        self.pods = [
            parse_pod(objects.flannel_pod(SPEC, n, f"kube-flannel-ds-{POD_SUFFIX[n.name]}"))
            for n in SPEC.all_nodes()
        ]
        self.broken = {broken} if broken else set()

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        probe = PROBE_IDS.get(tuple(argv))
        # probes added after the fixture was recorded (the journals) answer as the fake does
        if probe is None or node not in FIXTURE or probe not in FIXTURE[node]:
            return super().run(node, argv, timeout, sudo)
        if probe == "subnet-env" and node in self.broken:
            return CommandResult(
                node,
                tuple(argv),
                1,
                "",
                "cat: /run/flannel/subnet.env: No such file or directory\n",
                0.012,
            )
        out = FIXTURE[node][probe]
        return CommandResult(
            node, tuple(argv), out["exit_code"], out["stdout"], out["stderr"], 0.04
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        node = next((p.node for p in self.pods if p.name == name), None)
        super().delete_pod(namespace, name)
        if node is not None and self.restart_seconds is not None:
            self.broken.discard(node)


# -- templates: each kind of thread played once per node by the real Service ---------------------


@dataclass(frozen=True)
class TEvent:
    at: float  # seconds after the thread's first event
    kind: str
    actor: str | None
    in_run: bool
    source: str  # JSON text, with placeholders
    data: str
    marks: tuple[str, ...]  # the placeholders the texts hold
    dated: bool  # `data` holds times of the capture clock


@dataclass(frozen=True)
class Template:
    name: str
    node: str
    weight: float
    events: tuple[TEvent, ...]
    run: dict[str, Any] | None  # the runs row as the engine left it
    approvals: tuple[dict[str, Any], ...]
    offsets: tuple[float, ...]  # each event's `at`


class Player:
    """One thread played through the real Service, as the Slack adapter calls it."""

    def __init__(
        self, work: Path, registry: Registry, node: str, broken: bool, restarts: bool = True
    ) -> None:
        self.node = node
        self.clock = FakeClock(CAPTURE_START)
        self.cluster = LabCluster(self.clock, node if broken else None)
        if not restarts:
            self.cluster.restart_seconds = None
        self.path = work / f"capture-{time.monotonic_ns()}.db"
        self.store = SqliteStore(self.path, self.clock)
        self.store.db.execute(  # so the thread's run gets RUN_ID
            "INSERT INTO runs (id, runbook, version, code_hash, params, requester, source, plan, "
            "plan_hash, status, approvals_required, created_at, updated_at) VALUES "
            "(?, 'x', '0', 'x', '{}', 'x', '{}', '{}', 'x', 'succeeded', 1, '', '')",
            [RUN_ID - 1],
        )
        engine = Engine(
            store=self.store,
            registry=registry,
            policy=POLICY,
            kube=self.cluster,
            nodes=self.cluster,
            clock=self.clock,
            owner="capture",
            owner_alive=lambda owner: owner == "capture",
        )
        self.service = Service(
            Clusters.single(Cluster("default", engine, self.cluster)), self.store
        )

    def slash(self, text: str, user: str) -> Reply:
        source = {"adapter": "slack", "channel": CHANNEL, "user_id": _uid(user), "user": user}
        return self.service.handle(text, Requester(user, {**source, "thread_ts": THREAD}))

    def click(self, words: list[str], user: str) -> Reply:
        source = {
            "adapter": "slack",
            "channel": CHANNEL,
            "thread_ts": THREAD,
            "user_id": _uid(user),
            "user": user,
            "message_ts": MESSAGE,
        }
        return self.service.handle(words, Requester(user, source))

    def template(self, name: str, weight: float) -> Template:
        db = self.store.db.conn
        rows = db.execute(
            "SELECT ts, kind, actor, run_id, source, data FROM events ORDER BY id"
        ).fetchall()
        first = parse_iso(rows[0][0])
        events = tuple(
            TEvent(
                at=(parse_iso(ts) - first).total_seconds(),
                kind=kind,
                actor=actor,
                in_run=run_id is not None,
                source=source,
                data=data,
                marks=tuple(p for p in PLACEHOLDERS if p in source or p in data),
                dated=bool(CAPTURED_TIME.search(data)),
            )
            for ts, kind, actor, run_id, source, data in rows
        )
        assert all(e.actor in (None, REQ, APP) for e in events)
        db.row_factory = sqlite3.Row
        runs = [dict(r) for r in db.execute("SELECT * FROM runs WHERE id = ?", [RUN_ID])]
        approvals = tuple(
            dict(r)
            for r in db.execute("SELECT run_id, approver, plan_hash, decided_at FROM approvals")
        )
        db.row_factory = None
        self.store.close()
        self.path.unlink()
        run = runs[0] if runs else None
        offsets = tuple(e.at for e in events)
        return Template(name, self.node, weight, events, run, approvals, offsets)


def _uid(user: str) -> str:
    return {REQ: REQ_ID, APP: APP_ID}[user]


def _restart(p: Player, outcome: str) -> None:
    reply = p.slash(f"run {RESTART} nodes={p.node} force=true", REQ)
    assert reply.data.get("status") == "awaiting_approval", reply.data
    plan = f"plan={reply.data['plan_hash']}"
    if outcome == "failed":
        p.clock.advance(25)
        assert not p.click(["approve", str(RUN_ID), plan], REQ).ok  # not your own run
    p.clock.advance(95)
    if outcome == "denied":
        p.click(["deny", str(RUN_ID), "denied", "in", "Slack"], APP)
    else:
        p.click(["approve", str(RUN_ID), plan], APP)
    status = p.store.run(RUN_ID).status
    assert status == outcome, (outcome, status)


def _command(text: str) -> Callable[[Player], None]:
    def play(p: Player) -> None:
        p.slash(text.format(node=p.node), REQ)

    return play


# (name, threads per 100, the node is broken, play)
SCENARIOS: list[tuple[str, float, bool, Callable[[Player], None]]] = [
    ("diagnose", 16, False, _command("diagnose")),
    ("diagnose, node broken", 8, True, _command("diagnose {node}")),
    ("status", 10, False, _command("status")),
    ("plan", 8, True, _command(f"plan {RESTART} nodes={{node}} force=true")),
    ("restart, approved, verified", 18, True, lambda p: _restart(p, "succeeded")),
    ("restart, failed", 4, True, lambda p: _restart(p, "failed")),
    ("restart, denied", 3, True, lambda p: _restart(p, "denied")),
    ("node.check", 25, False, _command("run node.check node={node}")),
    ("node.check, node broken", 8, True, _command("run node.check node={node}")),
]


def capture(work: Path) -> list[Template]:
    templates = []
    nodes = [n.name for n in SPEC.all_nodes()]
    registry = Registry.from_package("runbooks")
    for name, weight, broken, play in SCENARIOS:
        for node in nodes:
            player = Player(work, registry, node, broken, restarts=name != "restart, failed")
            play(player)
            templates.append(player.template(name, weight / len(nodes)))
    return templates


# -- the log ---------------------------------------------------------------------------------------


@dataclass
class Thread:
    seq: int
    template: Template
    times: list[float]  # each event's time, epoch seconds
    req: str
    app: str
    channel: str
    run_id: int | None = None
    values: dict[str, str] = field(default_factory=dict)

    def when(self, captured: str) -> str:
        """A time the capture clock wrote, moved to this thread: the same distance after the
        event it follows (an approval still expires 30 minutes after it was asked for)."""
        at = (parse_iso(captured) - CAPTURE_START).total_seconds()
        offsets = self.template.offsets
        i = max(bisect.bisect_right(offsets, at) - 1, 0)
        return _iso(self.times[i] + at - offsets[i])

    def moved(self, match: re.Match[str]) -> str:
        return self.when(match.group(0))


def _iso(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, UTC))


def plan_threads(
    templates: list[Template], events: int, days: float, end: datetime, rng: random.Random
) -> list[Thread]:
    """Threads whose events add up to exactly `events`, started at random over `days`."""
    weights = [t.weight for t in templates]
    status = [t for t in templates if len(t.events) == 1]
    chosen: list[Template] = []
    total = 0
    while total < events:
        t = rng.choices(templates, weights)[0]
        if total + len(t.events) > events:
            t = rng.choice(status)
        chosen.append(t)
        total += len(t.events)
    last = end.timestamp() - 3600
    starts = sorted(rng.uniform(last - days * 86400, last) for _ in chosen)
    threads = []
    for seq, (t, start) in enumerate(zip(chosen, starts, strict=True)):
        scale = rng.uniform(0.5, 2.0)  # people answer faster or slower
        times, lag = [], 0.0
        for e in t.events:
            lag += rng.uniform(0.002, 0.12)  # the engine's own pace between events
            times.append(start + e.at * scale + lag)
        req = rng.choice(OPERATORS)
        threads.append(
            Thread(
                seq,
                t,
                times,
                req,
                rng.choice(APPROVERS),
                rng.choices(list(CHANNELS), list(CHANNELS.values()))[0],
            )
        )
    return threads


@dataclass
class Built:
    events: int
    runs: int
    threads: int
    seconds: float
    kinds: Counter[str]


def build_log(path: Path, events: int, days: float, seed: int, work: Path) -> Built:
    start = time.perf_counter()
    rng = random.Random(seed)
    templates = capture(work)
    end = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    threads = plan_threads(templates, events, days, end, rng)
    store = SqliteStore(path, FakeClock(end))
    if store.last_event_id():
        raise SystemExit(f"{path} already holds events")
    # scrub() as it is, with redact() memoised: a pure function of one string, and most strings
    # (node outputs, plans) recur in every thread of their kind
    real_redact = redact_module.redact
    redact_module.redact = functools.lru_cache(maxsize=1 << 16)(real_redact)
    try:
        replay, kinds, runs = _append_events(store.db.conn, threads, events)
    finally:
        redact_module.redact = real_redact
        _stored.cache_clear()
    store.close()
    _check_replay(path, replay, work)
    return Built(events, runs, len(threads), time.perf_counter() - start, kinds)


Replayed = tuple[str, str, str | None, int | None, Any, Any]


@functools.lru_cache(maxsize=1 << 16)
def _stored(text: str) -> str:
    """What Tx.record stores for a `source` or `data` value given as this JSON text:
    _json(scrub(value)), a pure function of the text, so the texts that recur (a node's probe
    outputs in every node.check run, a thread's source in each of its events) are done once."""
    return _json(scrub(json.loads(text)))


def _append_events(
    conn: sqlite3.Connection, threads: list[Thread], events: int
) -> tuple[list[Replayed], Counter[str], int]:
    """Every thread's events in time order, each made into the row Tx.record writes."""
    replay: list[Replayed] = []
    batch: list[tuple[Any, ...]] = []
    runs: list[dict[str, Any]] = []
    approvals: list[tuple[Any, ...]] = []
    kinds: Counter[str] = Counter()
    prev_hash, event_id, run_id = GENESIS, 0, 0
    timelines = (zip(th.times, itertools.repeat(th.seq), itertools.count()) for th in threads)
    conn.execute("BEGIN IMMEDIATE")
    for t, seq, i in heapq.merge(*timelines):
        th = threads[seq]
        tev = th.template.events[i]
        if not th.values:
            th.values = {
                REQ: th.req,
                APP: th.app,
                REQ_ID: USER_IDS[th.req],
                APP_ID: USER_IDS[th.app],
                CHANNEL: th.channel,
                THREAD: f"{th.times[0] - 0.8:.6f}",  # the thread's root message
                MESSAGE: f"{th.times[0] + 1.3:.6f}",  # the run's progress message in it
            }
        if tev.kind == "run_started":  # run ids in the order runs start, as the store gives them
            run_id += 1
            th.run_id = run_id
            th.values[str(RUN_ID)] = str(run_id)
            runs.append(_run_row(th))
            approvals += [
                (run_id, th.values[a["approver"]], a["plan_hash"], th.when(a["decided_at"]))
                for a in th.template.approvals
            ]
        source_text, data_text = tev.source, tev.data
        for mark in tev.marks:
            source_text = source_text.replace(mark, th.values[mark])
            data_text = data_text.replace(mark, th.values[mark])
        if tev.dated:
            data_text = CAPTURED_TIME.sub(th.moved, data_text)
        # what Tx.record does with them
        event_id += 1
        row: dict[str, Any] = {
            "id": event_id,
            "ts": _iso(t),
            "kind": tev.kind,
            "run_id": th.run_id if tev.in_run else None,
            "actor": th.values[tev.actor] if tev.actor else None,
            "source": _stored(source_text),
            "data": _stored(data_text),
        }
        digest = event_hash(prev_hash, row)
        batch.append((*row.values(), prev_hash, digest))
        prev_hash = digest
        kinds[tev.kind] += 1
        if event_id <= REPLAYED:
            source, data = json.loads(source_text), json.loads(data_text)
            replay.append((row["ts"], tev.kind, row["actor"], row["run_id"], source, data))
        if len(batch) == BATCH or event_id == events:
            _flush(conn, batch, runs, approvals, event_id, prev_hash)
            conn.execute("COMMIT")
            if event_id < events:
                conn.execute("BEGIN IMMEDIATE")
    assert event_id == events, (event_id, events)
    return replay, kinds, run_id


def _run_row(th: Thread) -> dict[str, Any]:
    assert th.template.run is not None and th.run_id is not None
    row = dict(th.template.run)
    for key in ("params", "source", "plan", "requester", "error", "approved_plan_hash"):
        if isinstance(row[key], str):
            for mark, value in th.values.items():
                row[key] = row[key].replace(mark, value)
    for key in ("created_at", "updated_at", "expires_at"):
        if row[key]:
            row[key] = th.when(row[key])
    row["id"] = th.run_id
    return row


def _flush(
    conn: sqlite3.Connection,
    batch: list[tuple[Any, ...]],
    runs: list[dict[str, Any]],
    approvals: list[tuple[Any, ...]],
    last_id: int,
    last_hash: str,
) -> None:
    if runs:
        columns = list(runs[0])
        conn.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [[r[c] for c in columns] for r in runs],
        )
    conn.executemany(
        "INSERT INTO approvals (run_id, approver, plan_hash, decided_at) VALUES (?, ?, ?, ?)",
        approvals,
    )
    conn.executemany(
        "INSERT INTO events (id, ts, kind, run_id, actor, source, data, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    conn.execute(
        "INSERT INTO chain_head (id, last_event_id, last_hash) VALUES (1, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET last_event_id = excluded.last_event_id, "
        "last_hash = excluded.last_hash",
        [last_id, last_hash],
    )
    batch.clear()
    runs.clear()
    approvals.clear()


def _check_replay(path: Path, replay: list[Replayed], work: Path) -> None:
    """Append the first events through the real Tx.record; the rows must be identical."""
    clock = FakeClock()
    scratch = SqliteStore(work / "replay.db", clock)
    scratch.db.execute("PRAGMA synchronous=OFF")  # a scratch file: no fsync per event
    for ts, kind, actor, run_id, source, data in replay:
        clock.moment = parse_iso(ts)
        with scratch.transaction() as tx:
            tx.record(kind, actor=actor, run_id=run_id, data=data, source=source)
    query = "SELECT * FROM events WHERE id <= ? ORDER BY id"
    theirs = scratch.db.conn.execute(query, [len(replay)]).fetchall()
    with sqlite3.connect(path) as conn:
        ours = conn.execute(query, [len(replay)]).fetchall()
    scratch.close()
    (work / "replay.db").unlink()
    if ours != theirs:
        bad = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise SystemExit(
            f"event {bad + 1} differs from Tx.record's row:\n{ours[bad]}\n{theirs[bad]}"
        )


# -- one case, in its own process ------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/self/status: this benchmark needs Linux")


def rss_kb() -> int:
    return _status_kb("VmRSS")


def peak_kb() -> int:
    """Peak RSS since the last reset_peak(): VmHWM, the figure getrusage's ru_maxrss reports,
    but this process image's own (ru_maxrss keeps the parent's peak across fork and exec)."""
    return _status_kb("VmHWM")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:  # Linux >= 4.0: peak := current RSS
        refs.write("5")


# the store's reads a report makes before selecting: runs and events into objects
LOADS = ("runs_by_id", "runs_involving", "events", "events_matching")
# what the figures are of: a digest of the report code path
CODE = (
    "bot/service/handler.py",
    "bot/service/report.py",
    "bot/store/database.py",
    "bot/store/audit.py",
    "bot/store/crosscheck.py",
    "bot/render.py",
    "templates/reports/report.md.j2",
    "templates/reports/report.html.j2",
    "templates/reports/report.csv.j2",
    "templates/reports/report.jsonl.j2",
)


def code_digest() -> str:
    digest = hashlib.sha256()
    for name in CODE:
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    return digest.hexdigest()[:16]


class Phases:
    """Per wrapped call: time, RSS before and after, and the peak RSS during it; and the time
    spent in the cyclic GC."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.memory: dict[str, dict[str, int]] = {}  # before, peak, after (kB), order
        self.top_kb = 0
        self.gc_seconds = 0.0
        self.gc_runs = 0
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._gc_start
            self.gc_runs += 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            before = rss_kb()
            self.top_kb = max(self.top_kb, peak_kb())
            reset_peak()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                peak = peak_kb()
                self.top_kb = max(self.top_kb, peak)
                order = self.memory.get(name, {}).get("order", len(self.memory))
                self.memory[name] = {
                    "before": before,
                    "peak": peak,
                    "after": rss_kb(),
                    "order": order,
                }

        return timed


def full_walk(store: SqliteStore) -> ChainReport:
    """`Store.verify()` as it was before the fast walk: every event read as a dict, hashed from
    `str` through `event_hash` and checked by `verify_rows`, then the runs cross-check."""
    db = store.db
    db.execute("BEGIN")
    try:
        head = list(_rows(db, "SELECT last_event_id, last_hash FROM chain_head"))
        runs = ChainedRuns()
        chain = verify_rows(
            _rows(db, f"SELECT *, {FACTS} AS facts FROM events ORDER BY id"),
            head[0] if head else None,
            store.checkpoint(),
            runs.see,
            WATCHED,
        )
        problem = runs.disagreement(
            _rows(db, f"SELECT {RUN_COLUMNS}, cluster FROM runs ORDER BY id"),
            _rows(db, "SELECT run_id, approver, plan_hash FROM approvals ORDER BY id"),
            None,
        )
    finally:
        db.execute("COMMIT")
    return chain if problem is None else dataclasses.replace(chain, ok=False, problem=problem[1])


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    clock = FakeClock(parse_iso(spec["now"]))
    store = SqliteStore(Path(spec["db"]), clock)
    cluster = FakeCluster(clock)
    engine = Engine(
        store=store,
        registry=Registry.from_package("runbooks"),
        policy=Policy(),
        kube=cluster,
        nodes=cluster,
        clock=clock,
        owner="bench",
        owner_alive=lambda owner: owner == "bench",
    )
    service = Service(Clusters.single(Cluster("default", engine, None)), store)
    renderer = Renderer(REPO / "templates")
    if spec["format"] != "rows":  # compiled up front
        renderer.env.get_template(f"reports/report.{spec['format'] or 'md'}.j2")
    phases = Phases()
    if spec.get("before"):  # today's path before this change: every report walks everything
        store.verify = functools.partial(full_walk, store)  # type: ignore[method-assign]
        store.verify_recent = store.verify  # type: ignore[method-assign]
    for name in (*LOADS, "verify", "verify_recent"):  # whichever this version of the store has
        if hasattr(store, name):
            setattr(store, name, phases.wrap(name, getattr(store, name)))
    for name in ("select", "build"):
        setattr(report_module, name, phases.wrap(name, getattr(report_module, name)))
    render = phases.wrap("render", renderer.report)
    gc.collect()
    base_kb = rss_kb()
    reset_peak()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    if spec["format"] == "rows":  # what an export's reading costs: one pass over every event
        count = sum(1 for _ in store.iter_events_matching(EventFilter()))
        out.update(ok=True, selected=count)
    elif spec["selection"] is None:
        chain = store.verify()
        out.update(ok=chain.ok, describe=chain.describe(), selected=chain.events)
    elif spec["format"] in report_module.STREAMED:  # as `flannel-bot audit report` writes it
        export = phases.wrap("export", service.export)(spec["selection"])
        target = Path(spec["write"])
        with target.open("w", encoding="utf-8") as file:
            phases.wrap("write", renderer.write_export)(export, spec["format"], file.write)
        out.update(ok=export.header["chain"]["ok"], selected=export.header["summary"]["events"])
        out["bytes"] = target.stat().st_size
        target.unlink()
    else:
        data = service.report(spec["selection"])
        text = render(data, spec["format"])
        out.update(ok=data["chain"]["ok"], selected=data["summary"]["events"])
        out["chain"] = next((ln for ln in text.splitlines() if "Audit chain" in ln), "")[:300]
        if spec["write"]:
            target = Path(spec["write"])
            phases.wrap("write", target.write_text)(text)
            out["bytes"] = target.stat().st_size
            target.unlink()
        else:
            out["bytes"] = len(text.encode())
    out.update(
        seconds=time.perf_counter() - start,
        phases=phases.seconds,
        memory=phases.memory,
        base_kb=base_kb,
        max_kb=max(phases.top_kb, peak_kb()),
        gc_seconds=phases.gc_seconds,
        gc_runs=phases.gc_runs,
    )
    return out


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"case {spec['name']} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the parent ------------------------------------------------------------------------------------


def describe_log(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        events, first, last = conn.execute(
            "SELECT COUNT(*), MIN(ts), MAX(ts) FROM events"
        ).fetchone()
        runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        threads = conn.execute(
            "SELECT COUNT(DISTINCT json_extract(source, '$.thread_ts')) FROM events"
        ).fetchone()[0]
        # the incident: a restart approved and verified, from the middle of the log
        succeeded = conn.execute(
            "SELECT COUNT(*) FROM runs WHERE runbook = 'flannel.restart-pods' AND "
            "status = 'succeeded'"
        ).fetchone()[0]
        run_id, source = conn.execute(
            "SELECT id, source FROM runs WHERE runbook = 'flannel.restart-pods' AND "
            "status = 'succeeded' ORDER BY id LIMIT 1 OFFSET ?",
            [succeeded // 2],
        ).fetchone()
        in_thread = conn.execute(
            "SELECT COUNT(*) FROM events WHERE json_extract(source, '$.thread_ts') = ?",
            [json.loads(source)["thread_ts"]],
        ).fetchone()[0]
    return {
        "events": events,
        "runs": runs,
        "threads": threads,
        "first": first,
        "last": last,
        "run": run_id,
        "thread": json.loads(source)["thread_ts"],
        "in_thread": in_thread,
        "bytes": path.stat().st_size,
    }


def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--db", type=Path, help="build the log here, or reuse it; kept")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--exports", action="store_true", help="also the two full exports (minutes, GBs)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flannel-bot-report-bench-"))
    path = args.db or work / "audit.db"
    try:
        reuse = path.exists() and _has_events(path)
        if reuse:
            print(f"reusing {path}", flush=True)
        else:
            built = build_log(path, args.events, args.days, args.seed, work)
            print(
                f"built {path}: {built.events:,} events, {built.runs:,} runs, "
                f"{built.threads:,} Slack threads in {built.seconds:.0f} s "
                f"({built.events / built.seconds:,.0f} events/s); the first {REPLAYED} events "
                "are byte-identical to Tx.record's rows",
                flush=True,
            )
            print(
                "  kinds: " + ", ".join(f"{k} {n:,}" for k, n in built.kinds.most_common()),
                flush=True,
            )
        print(ensure_marker(path), flush=True)
        log = describe_log(path)
        report(log, path, work, args.exports)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _has_events(path: Path) -> bool:
    with sqlite3.connect(path) as conn:
        try:
            return bool(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:
            return False


CASES: list[tuple[str, str, str | None, bool, bool]] = [
    # (label, selection key, format, written to a file, today's path before the marker)
    ("Store.verify() before", "", None, False, True),
    ("Store.verify()", "", None, False, False),
    ("thread md before", "thread", "md", False, True),
    ("thread=<ts> md", "thread", "md", False, False),
    ("thread html before", "thread", "html", False, True),
    ("thread=<ts> html", "thread", "html", False, False),
    ("run md before", "run", "md", False, True),
    ("run=N md", "run", "md", False, False),
    ("since=24h html", "since", "html", False, False),
    ("read rows", "all", "rows", False, False),
    ("export jsonl", "all", "jsonl", True, False),
    ("export csv", "all", "csv", True, False),
]
EXPORTS = ("read rows", "export jsonl", "export csv")
AFTER_MARKER = 500  # events recorded after the marker, as between two scheduled head posts


def ensure_marker(path: Path) -> str:
    """What the serve process leaves: a full verification recorded as a chained
    `audit_verified` marker with each head it posts, and events since. Done once per log."""
    with sqlite3.connect(path) as conn:
        try:
            found = conn.execute(
                "SELECT id FROM events WHERE kind = 'audit_verified' ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:
            found = None
        last = conn.execute("SELECT MAX(id), MAX(ts) FROM events").fetchone()
    if found:
        return f"marker event {found[0]}, {last[0] - found[0]} events after it"
    clock = FakeClock(parse_iso(last[1]))
    store = SqliteStore(path, clock)
    chain = store.verify()
    assert chain.ok, chain.describe()
    marker = store.record_verified(chain)
    assert marker is not None
    for i in range(AFTER_MARKER):
        clock.advance(1)
        store.record(EventKind.COMMAND, actor="alice", data={"text": f"status {i}"})
    store.close()
    return f"marker event {marker.id} recorded, {AFTER_MARKER} events after it"


def report(log: dict[str, Any], path: Path, work: Path, exports: bool) -> None:
    now = iso(parse_iso(log["last"]) + timedelta(minutes=1))
    selections: dict[str, dict[str, str] | None] = {
        "": None,
        "thread": {"thread": log["thread"]},
        "run": {"run": str(log["run"])},
        "since": {"since": "24h"},
        "all": {},
    }
    code = code_digest()
    print(
        f"audit log: {log['events']:,} events, {log['runs']:,} runs, {log['threads']:,} threads, "
        f"{log['first'][:16]} to {log['last'][:16]}, {log['bytes'] / 1e6:,.0f} MB; report time "
        f"{now[:19]}; incident: thread={log['thread']} ({log['in_thread']} events), "
        f"run={log['run']}; report code {code}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for label, key, fmt, write, before in CASES:
        if label in EXPORTS and not exports:
            continue
        spec = {
            "before": before,
            "name": label,
            "db": str(path),
            "now": now,
            "selection": selections[key],
            "format": fmt,
            "write": str(work / f"export.{fmt}") if write else "",
        }
        results[label] = r = measure(spec)
        print(
            f"  {label:18} {r['seconds']:8.2f} s, peak RSS {mb(r['max_kb'] - r['base_kb'])} above "
            f"{mb(r['base_kb'])}",
            flush=True,
        )
    verify = results["Store.verify()"]
    print(f"\nStore.verify(): {verify['describe']}")
    problems = [
        f"the chain did not verify in {label}" for label, r in results.items() if not r["ok"]
    ]
    if code_digest() != code:
        problems.append(f"the report code changed during the run ({', '.join(CODE)})")
    print(
        "\nwall time, each case in its own process, once. select+build = load (the store reads "
        f"before selecting: {', '.join(LOADS)}, whichever are called) + report.select + "
        "report.build; verify = the chain check Service.report makes (store.verify_recent(), "
        "or the whole walk in the `before` cases); gc = time in the "
        "cyclic GC, inside the other columns"
    )
    print(
        f"  {'case':17} {'events':>9} {'total':>8} {'sel+build':>9} {'(load':>8} {'select':>7} "
        f"{'build)':>7} {'verify':>7} {'render':>7} {'gc':>6} {'output':>9} {'÷ verify':>8}"
    )
    for label, r in results.items():
        p = r["phases"]
        load = _load_seconds(p)
        select_build = (
            p.get("export")  # a streamed export: Service.export (loads, then the tally pass)
            if "export" in p
            else None
            if load is None
            else load + p["select"] + p["build"]
        )
        print(
            f"  {label:17} {r['selected']:>9,} {r['seconds']:7.2f}s {_s(select_build):>9} "
            f"{_s(load):>8} {_s(p.get('select')):>7} {_s(p.get('build')):>7} "
            f"{_s(_chain(p)):>7} {_s(p.get('render')):>7} {r['gc_seconds']:5.1f}s "
            f"{_bytes(r.get('bytes')):>9} {r['seconds'] / verify['seconds']:7.1f}x"
        )
    print(
        "\npeak memory: RSS from /proc/self/status (VmRSS; VmHWM, the peak getrusage's ru_maxrss "
        "reports, reset before each phase through /proc/self/clear_refs), in each case's own "
        "process. baseline: RSS once the Service was built; peak +: the case's peak above it; "
        "each phase: its peak above the RSS it started with; kept: RSS the load leaves behind"
    )
    print(
        f"  {'case':17} {'baseline':>9} {'peak +':>9} {'load':>8} {'kept':>8} {'select':>8} "
        f"{'verify':>8} {'build':>8} {'render':>8} {'write':>8}"
    )
    for label, r in results.items():
        m = r["memory"]
        loads = sorted((m[k] for k in LOADS if k in m), key=lambda x: x["order"])
        cells = [
            _m(max(x["peak"] for x in loads) - loads[0]["before"] if loads else None),
            _m(loads[-1]["after"] - loads[0]["before"] if loads else None),
        ]
        check = "verify_recent" if "verify_recent" in m else "verify"
        cells += [
            _m(m[k]["peak"] - m[k]["before"] if k in m else None)
            for k in ("select", check, "build", "render", "write")
        ]
        print(
            f"  {label:17} {mb(r['base_kb']):>9} {mb(r['max_kb'] - r['base_kb']):>9} "
            + " ".join(f"{c:>8}" for c in cells)
        )
    print("  load, by call (time, peak RSS above the RSS it started with):")
    for label, r in results.items():
        m, p = r["memory"], r["phases"]
        calls = [k for k in sorted(m, key=lambda k: m[k]["order"]) if k in LOADS]
        if calls:
            print(
                f"    {label:17} "
                + ", ".join(f"{k} {p[k]:.2f}s {_m(m[k]['peak'] - m[k]['before'])}" for k in calls)
            )
    n = log["events"]
    print("\n  today's path (every report walks the whole chain) beside the marker, same run:")
    for before, after in (
        ("Store.verify() before", "Store.verify()"),
        ("thread md before", "thread=<ts> md"),
        ("thread html before", "thread=<ts> html"),
        ("run md before", "run=N md"),
    ):
        b, a = results[before], results[after]
        print(
            f"    {after:17} {b['seconds']:7.2f}s -> {a['seconds']:6.2f}s "
            f"({b['seconds'] / a['seconds']:.1f}x); chain check {_s(_chain(b['phases']))} -> "
            f"{_s(_chain(a['phases']))}"
        )
    chained = results["thread=<ts> md"].get("chain", "")
    print(f"  the thread report says: {chained}")
    if "export jsonl" not in results:
        print("  (the full exports were not run: --exports)")
        if problems:
            raise SystemExit("FAILED: " + "; ".join(problems))
        return
    thread, export = results["thread=<ts> md"], results["export jsonl"]
    print(
        "\n  thread report (md) ÷ full export (jsonl): "
        f"{thread['seconds'] / export['seconds']:.3f} "
        f"({thread['selected']} of {export['selected']:,} events, "
        f"{thread['selected'] / export['selected']:.4%} of the log)"
    )
    for label in ("export jsonl", "export csv"):
        r = results[label]
        p, m = r["phases"], r["memory"]
        held = {k: _m(m[k]["peak"] - m[k]["before"]) for k in ("export", "write")}
        print(
            f"  {label} (streamed): {r['selected'] / r['seconds']:,.0f} events/s end to end; "
            f"Service.export {p['export']:.2f}s (peak +{held['export']}"
            f", of which load {_s(_load_seconds(p))}, verify {_s(_chain(p))}), then "
            f"{_bytes(r['bytes'])} written in {p['write']:.2f}s (peak "
            f"+{held['write']}); per event "
            f"{r['seconds'] / n * 1e6:.1f} µs; ÷ reading the rows once "
            f"({results['read rows']['seconds']:.2f}s) "
            f"{r['seconds'] / results['read rows']['seconds']:.1f}x"
        )
    reports = [
        r for label, r in results.items() if "select" in r["phases"] and "before" not in label
    ]
    shares = [(_chain(r["phases"]) or 0.0) / r["seconds"] for r in reports]
    print(
        f"  Store.verify() alone: {n / verify['seconds']:,.0f} events/s; the chain check from "
        f"the marker inside each report: {min(shares):.0%} to {max(shares):.0%} of its time"
    )
    if problems:
        raise SystemExit("FAILED: " + "; ".join(problems))


def _chain(phases: dict[str, float]) -> float | None:
    """The chain check a case made: verify_recent (which may fall back on verify), or verify."""
    return phases.get("verify_recent", phases.get("verify"))


def _load_seconds(phases: dict[str, float]) -> float | None:
    called = [phases[k] for k in LOADS if k in phases]
    return sum(called) if called else None


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


def _m(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:,.0f}M"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        print(json.dumps(run_case(json.loads(sys.argv[2]))))
    else:
        main()
