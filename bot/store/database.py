"""One SQLite file holding the audit chain and the state of every run.

WAL with `synchronous=FULL`: a committed event survives power loss, and a killed process loses at
most the transaction it was in. Every write goes through `Store.transaction()`, which takes SQLite's
write lock up front (BEGIN IMMEDIATE), so state changes and their audit events commit together and
concurrent approvers, threads or processes, are serialised.

Whatever SQLite says about the file itself (locked too long, not a database, damaged, read-only,
full) comes out as a named `AuditLogError` that names the file and what to do; a store opened
`read_only` (to verify a forensic copy) opens the file read-only and never writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import multiprocessing
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec
import sqlite_utils

from flannel_bot.errors import (
    AuditChainBroken,
    AuditLogBusy,
    AuditLogCorrupt,
    AuditLogError,
    AuditLogMissing,
    AuditLogUnwritable,
    TargetBusy,
    UnknownRun,
)
from flannel_bot.ports.clock import Clock, SystemClock, iso
from flannel_bot.ports.store import (
    Approval,
    ChainReport,
    Event,
    EventFilter,
    EventKind,
    RunBrief,
    RunRecord,
    RunStatus,
)
from flannel_bot.store.audit import (
    GENESIS,
    at_the_end,
    event_hash,
    verify_rows,
    vouches,
    walk,
    walked,
)
from flannel_bot.store.crosscheck import FACTS, RUN_COLUMNS, WATCHED, ChainedRuns
from flannel_bot.store.migrations import MIGRATIONS
from flannel_bot.store.redact import scrub

log = logging.getLogger(__name__)
# how long a Slack delivery is remembered: Slack retries a request 3 times within 5 minutes, and
# Socket Mode redelivers an envelope within seconds, so an hour is ample and keeps the table small
DELIVERY_KEEP = timedelta(hours=1)
WALK_BATCH = 4096  # events per fetch when walking the chain
# from how many events `verify` walks the second half of the chain in another process (a read-only
# connection of its own) while it walks the first: hashing is CPU-bound and one core does ~120k
# events/s, so a million events took ~8 s; below this the worker's start-up is not worth it
PARALLEL_FROM = 200_000
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _where(f: EventFilter) -> tuple[str, list[object]]:
    """The WHERE clause and its arguments; the json_extract expressions match the indexes of
    migration 5 exactly, or SQLite would not use them."""
    where: list[str] = ["1"]
    args: list[object] = []
    if f.start is not None:
        where.append("ts >= ?")
        args.append(f.start)
    if f.end is not None:
        where.append("ts <= ?")
        args.append(f.end)
    if f.run_ids is not None:
        where.append(f"run_id IN ({','.join('?' * len(f.run_ids)) or 'NULL'})")
        args.extend(f.run_ids)
    if f.actor_or_runs is not None:
        actor, runs = f.actor_or_runs
        where.append(f"(actor = ? OR run_id IN ({','.join('?' * len(runs)) or 'NULL'}))")
        args.extend([actor, *runs])
    if f.channel is not None:
        where.append("json_extract(source, '$.channel') = ?")
        args.append(f.channel)
    if f.thread is not None:
        where.append("json_extract(source, '$.thread_ts') = ?")
        args.append(f.thread)
    return " AND ".join(where), args


_RUN_COLUMNS = {f.name for f in dataclasses.fields(RunRecord)} - {"id"}


def _rows(
    db: sqlite_utils.Database, sql: str, args: Sequence[object] = ()
) -> Iterator[dict[str, Any]]:
    """Rows as dicts, one statement each (sqlite_utils' `query` wraps every read in a savepoint)."""
    cursor = db.execute(sql, list(args))
    names = [c[0] for c in cursor.description]
    for row in cursor:
        yield dict(zip(names, row, strict=True))


def _insert(db: sqlite_utils.Database, table: str, row: Mapping[str, Any]) -> int:
    """One INSERT of a row whose keys are the table's columns; the new row's id."""
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cursor = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))  # noqa: S608 - our own table and column names
    return int(cursor.lastrowid or 0)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _loads(text: str) -> Any:
    """`json.loads`, about twice as fast for the small objects events hold (msgspec); text it
    refuses (NaN, numbers out of a double's range, which `json.dumps` writes) goes to
    `json.loads`, so what is read never changes."""
    try:
        return _decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


_decode = msgspec.json.Decoder().decode


def _to_event(r: dict[str, Any]) -> Event:
    source, data = _loads(r["source"]), _loads(r["data"])
    return Event(r["id"], r["ts"], r["kind"], r["run_id"], r["actor"], source, data, r["hash"])


def _to_run(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        **{
            **row,
            "params": json.loads(row["params"]),
            "source": json.loads(row["source"]),
            "plan": json.loads(row["plan"]),
            "cancel_requested": bool(row["cancel_requested"]),
        }
    )


def _to_brief(row: Sequence[Any]) -> RunBrief:
    run_id, runbook, version, status, requester, cluster, channel, thread = row
    shared = sys.intern  # the same few names on every run
    return RunBrief(
        run_id,
        shared(runbook),
        shared(version),
        shared(status),
        shared(requester),
        shared(cluster),
        channel,
        thread,
    )


class SqliteTx:
    """The reads and writes of one transaction (the `Tx` port over SQLite)."""

    def __init__(self, db: sqlite_utils.Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.events: list[Event] = []
        self._head: tuple[int, str] | None = None  # read once per transaction, then kept

    def now(self) -> str:
        return iso(self.clock.now())

    def record(
        self,
        kind: EventKind | str,
        *,
        actor: str | None,
        run_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> Event:
        if self._head is None:
            self._head = self._read_head()
        last_id, prev_hash = self._head
        event_id, ts = last_id + 1, self.now()
        source_text, data_text = _json(scrub(dict(source or {}))), _json(scrub(dict(data or {})))
        row_in: dict[str, Any] = {
            "id": event_id,
            "ts": ts,
            "kind": str(kind),
            "run_id": run_id,
            "actor": actor,
            "source": source_text,
            "data": data_text,
        }
        digest = event_hash(prev_hash, row_in)
        try:
            self.db.execute(
                "INSERT INTO events (id, ts, kind, run_id, actor, source, data, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*row_in.values(), prev_hash, digest],
            )
        except sqlite3.IntegrityError as exc:  # event `event_id` exists: the head is behind
            raise AuditChainBroken(
                f"the audit log's chain_head row says it ends at event {last_id}, but event "
                f"{event_id} exists: the file was edited, so nothing more is chained onto it. "
                f"{_BROKEN_ADVICE}"
            ) from exc
        self.db.execute(
            "INSERT INTO chain_head (id, last_event_id, last_hash) VALUES (1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET last_event_id = excluded.last_event_id, "
            "last_hash = excluded.last_hash",
            [event_id, digest],
        )
        self._head = (event_id, digest)
        event = Event(
            event_id,
            ts,
            str(kind),
            run_id,
            actor,
            json.loads(source_text),
            json.loads(data_text),
            digest,
        )
        self.events.append(event)
        return event

    def _read_head(self) -> tuple[int, str]:
        row = self.db.execute("SELECT last_event_id, last_hash FROM chain_head").fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        last = self.db.execute("SELECT MAX(id) FROM events").fetchone()[0]
        if last is not None:
            raise AuditChainBroken(
                f"the audit log's chain_head row is missing while it holds events up to {last}: "
                f"the file was edited, so nothing more is chained onto it. {_BROKEN_ADVICE}"
            )
        return 0, GENESIS

    def transition(
        self,
        run_id: int,
        status: RunStatus | None,
        kind: EventKind,
        *,
        actor: str | None = None,
        source: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> RunRecord:
        """The run's row and the event saying why, together; an ended run lets go of its
        change locks and its status goes into the event."""
        if status is not None:
            fields["status"] = str(status)
        run = self.update_run(run_id, **fields)
        payload = dict(data or {})
        if status is not None and status.ended:
            self.release_targets(run_id)
            payload = {"status": str(status), **payload}
        self.record(
            kind,
            actor=actor,
            run_id=run_id,
            source=run.source if source is None else source,
            data=payload,
        )
        return run

    # -- runs -----------------------------------------------------------------------------------

    def insert_run(self, **fields: Any) -> int:
        now = self.now()
        row = {
            **fields,
            "params": _json(fields["params"]),
            "source": _json(fields["source"]),
            "plan": _json(fields["plan"]),
            "created_at": now,
            "updated_at": now,
        }
        return _insert(self.db, "runs", row)

    def get_run(self, run_id: int) -> RunRecord:
        rows = list(_rows(self.db, "SELECT * FROM runs WHERE id = ?", [run_id]))
        if not rows:
            raise UnknownRun(f"there is no run {run_id}; `status` lists recent runs")
        return _to_run(rows[0])

    def update_run(self, run_id: int, **fields: Any) -> RunRecord:
        for key in ("plan", "params", "source"):
            if key in fields:
                fields[key] = _json(fields[key])
        if "cancel_requested" in fields:
            fields["cancel_requested"] = int(fields["cancel_requested"])
        fields["updated_at"] = self.now()
        unknown = set(fields) - _RUN_COLUMNS
        if unknown:
            raise TypeError(f"runs has no column {', '.join(sorted(unknown))}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        cursor = self.db.execute(
            f"UPDATE runs SET {assignments} WHERE id = ? RETURNING *",  # noqa: S608 - column names checked
            [*fields.values(), run_id],
        )
        row = cursor.fetchone()
        if row is None:
            raise UnknownRun(f"there is no run {run_id}; `status` lists recent runs")
        return _to_run(dict(zip([c[0] for c in cursor.description], row, strict=True)))

    def runs_with_status(self, *statuses: str) -> list[RunRecord]:
        marks = ",".join("?" for _ in statuses)
        return [
            _to_run(r)
            for r in _rows(
                self.db,
                f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY id",  # noqa: S608
                list(statuses),
            )
        ]

    # -- approvals ------------------------------------------------------------------------------

    def add_approval(self, run_id: int, approver: str, plan_hash: str) -> bool:
        """Record an approval; False if this person already approved this plan."""
        try:
            _insert(
                self.db,
                "approvals",
                {
                    "run_id": run_id,
                    "approver": approver,
                    "plan_hash": plan_hash,
                    "decided_at": self.now(),
                },
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def approvals(self, run_id: int, plan_hash: str) -> list[Approval]:
        return [
            Approval(**r)
            for r in _rows(
                self.db,
                "SELECT run_id, approver, plan_hash, decided_at FROM approvals "
                "WHERE run_id = ? AND plan_hash = ? ORDER BY id",
                [run_id, plan_hash],
            )
        ]

    # -- deliveries -----------------------------------------------------------------------------

    def first_delivery(self, key: str, source: str) -> bool:
        """Record that the request `key` arrived; False when it had arrived before (a retry,
        a redelivery or a double click), so the caller does nothing the second time.
        Deliveries older than DELIVERY_KEEP, which Slack no longer retries, are forgotten."""
        try:
            _insert(
                self.db, "deliveries", {"key": key, "source": source, "received_at": self.now()}
            )
        except sqlite3.IntegrityError:
            return False
        self.db.execute(
            "DELETE FROM deliveries WHERE received_at < ?", [iso(self.clock.now() - DELIVERY_KEEP)]
        )
        return True

    # -- change locks ---------------------------------------------------------------------------

    def lock_targets(self, targets: Sequence[str], run_id: int, requester: str) -> None:
        for target in targets:
            holder = list(
                _rows(
                    self.db, "SELECT run_id, requester FROM target_locks WHERE target = ?", [target]
                )
            )
            if holder and holder[0]["run_id"] != run_id:
                what, _, cluster = target.rpartition("@")
                kind, _, name = (what or target).partition("/")
                raise TargetBusy(
                    f"{kind} {name}{f' on cluster {cluster}' if what else ''} is being changed "
                    f"by run {holder[0]['run_id']} "
                    f"(requested by @{holder[0]['requester']}); wait for it to finish or cancel it"
                )
            if not holder:
                _insert(
                    self.db,
                    "target_locks",
                    {
                        "target": target,
                        "run_id": run_id,
                        "requester": requester,
                        "acquired_at": self.now(),
                    },
                )

    def release_targets(self, run_id: int) -> None:
        self.db.execute("DELETE FROM target_locks WHERE run_id = ?", [run_id])


def _named_errors(
    method: Callable[Concatenate[SqliteStore, _P], _R],
) -> Callable[Concatenate[SqliteStore, _P], _R]:
    """What SQLite says about the file (locked, damaged, full) as the named error for it."""

    @functools.wraps(method)
    def named(self: SqliteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            error = self.named_error(exc)
            if error is None:
                raise
            raise error from exc

    return named


class SqliteStore:
    """Opens the database per thread, migrates it, and hands out transactions.

    `read_only` opens an existing file without writing to it (no migrations, no events; a
    transaction is refused), for verifying a copy kept as evidence. `busy_timeout` is how long
    a write waits for another process's write lock before giving up with AuditLogBusy."""

    def __init__(
        self, path: Path, clock: Clock, *, read_only: bool = False, busy_timeout: float = 60.0
    ) -> None:
        self.path = path
        self.clock = clock
        self.read_only = read_only
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._listeners: list[Callable[[Event], None]] = []
        if read_only:
            self._check_is_audit_log()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate()

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Called with every event after its transaction commits (the notifiers)."""
        self._listeners.append(listener)

    def announce(self, events: Sequence[Event]) -> None:
        """Tell this store's listeners about events another process committed to the same file
        (a worker of `serve`), as if they had been committed here."""
        self._notify(events)

    def _notify(self, events: Sequence[Event]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    # a broken notifier must not turn a committed step into a crashed run
                    log.exception("event listener failed on event %s (%s)", event.id, event.kind)

    @property
    def db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            try:
                conn = self._open_read_only() if self.read_only else self._open()
            except sqlite3.Error as exc:
                raise self.named_error(exc) or exc from exc
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        """The file opened read-only. A file nobody may write (no write bits) whose WAL holds
        nothing is opened immutable: no lock and no -shm beside it, so a copy kept as evidence
        stays exactly as it was. Otherwise `mode=ro`, which sees a live log's WAL; immutable
        only when SQLite may not write the WAL index beside it and the WAL is empty."""
        if not self.path.is_file():
            raise AuditLogMissing(
                f"there is no audit log at {self.path}; name the file with --db (or FLANNEL_BOT_DB)"
            )
        wal = self.path.with_name(self.path.name + "-wal")
        wal_empty = not wal.exists() or wal.stat().st_size == 0
        frozen = wal_empty and not self.path.stat().st_mode & 0o222
        tries = ["mode=ro&immutable=1"] if frozen else ["mode=ro"]
        if wal_empty and not frozen:
            tries.append("mode=ro&immutable=1")
        failure: sqlite3.Error | None = None
        for params in tries:
            uri = f"{self.path.resolve().as_uri()}?{params}"
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.Error as exc:
                conn.close()
                failure = exc
        assert failure is not None
        raise failure

    def named_error(self, exc: sqlite3.Error) -> AuditLogError | None:
        """The named error for what SQLite said about the file; None for anything else (a
        bug, which should crash loudly)."""
        text = str(exc).lower()
        where = f"the audit log {self.path}"
        if "locked" in text or "busy" in text:
            return AuditLogBusy(
                f"{where} stayed locked by another process for {self.busy_timeout:g} s ({exc}): "
                "another flannel-bot or a sqlite3 shell is holding a write transaction on it; "
                "let it finish (or stop it) and try again; nothing was done"
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return AuditLogCorrupt(
                f"{where} is not a SQLite database or is damaged ({exc}); nothing was done. Point "
                "--db (FLANNEL_BOT_DB) at the bot's file, or restore it from a backup and check "
                "it with `flannel-bot audit verify`"
            )
        if self.read_only and (_unwritable(exc) or "unable to open" in text):
            return AuditLogUnwritable(
                f"{where} cannot be read without writing beside it ({exc}): its -wal file holds "
                "commits, and SQLite must write the -shm index next to it to read them. Copy the "
                "file with its -wal and -shm into a directory you may write, and verify the copy"
            )
        if _unwritable(exc):
            return AuditLogUnwritable(
                f"{where} cannot be written ({exc}); nothing was done that it does not record. "
                "Free space on that disk (or make it writable) and try again"
            )
        if "unable to open" in text:
            return AuditLogUnwritable(
                f"{where} cannot be opened ({exc}): --db (FLANNEL_BOT_DB) must name a file in a "
                "directory the bot may write"
            )
        return None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @contextmanager
    def transaction(self) -> Iterator[SqliteTx]:
        """One atomic write. A file that cannot take it (full, read-only, locked too long,
        damaged) ends the caller's work with a named AuditLogError before anything the write
        was to record is applied."""
        if self.read_only:
            raise AuditLogUnwritable(
                f"the audit log {self.path} was opened read-only (to verify it as it is); "
                "nothing can be recorded on it"
            )
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            tx = SqliteTx(db, self.clock)
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            error = self.named_error(exc)
            if error is None:
                raise
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise error from exc
        self._notify(tx.events)

    @_named_errors
    def _migrate(self) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            for version, script in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)", [version, iso(self.clock.now())]
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @_named_errors
    def _check_is_audit_log(self) -> None:
        if not {"events", "chain_head"} <= self._tables():
            raise AuditLogMissing(
                f"{self.path} holds no flannel-bot audit log (it has no events table); name the "
                "bot's file with --db (or FLANNEL_BOT_DB)"
            )

    def _columns(self, table: str) -> set[str]:
        """A table's columns (a log from before a migration lacks the newer ones)."""
        return {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def record(
        self,
        kind: EventKind,
        *,
        actor: str | None,
        run_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> Event:
        """One audit event in a transaction of its own."""
        with self.transaction() as tx:
            return tx.record(kind, actor=actor, run_id=run_id, data=data, source=source)

    def transition(
        self,
        run_id: int,
        status: RunStatus | None,
        kind: EventKind,
        *,
        actor: str | None = None,
        source: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> RunRecord:
        """One state change of a run in a transaction of its own (see `Tx.transition`)."""
        with self.transaction() as tx:
            return tx.transition(
                run_id, status, kind, actor=actor, source=source, data=data, **fields
            )

    # -- reads ----------------------------------------------------------------------------------

    @_named_errors
    def approvals_of(self, run: RunRecord) -> list[Approval]:
        """The approvals given to the run's current plan."""
        return SqliteTx(self.db, self.clock).approvals(run.id, run.plan_hash)

    @_named_errors
    def run(self, run_id: int) -> RunRecord:
        return SqliteTx(self.db, self.clock).get_run(run_id)

    @_named_errors
    def recent_runs(
        self, limit: int = 20, cluster: str | None = None, channel: str | None = None
    ) -> list[RunRecord]:
        conditions, args = ["1"], []
        if cluster:
            conditions.append("cluster = ?")
            args.append(cluster)
        if channel is not None:
            conditions.append("json_extract(source, '$.channel') = ?")
            args.append(channel)
        where = " AND ".join(conditions)
        return [
            _to_run(r)
            for r in _rows(
                self.db,
                f"SELECT * FROM runs WHERE {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
                [*args, limit],
            )
        ]

    @_named_errors
    def runs_by_id(
        self,
        ids: Sequence[int] | None = None,
        runbook: str | None = None,
        plan_mentions: str | None = None,
        cluster: str | None = None,
    ) -> dict[int, RunRecord]:
        """Runs, narrowed in SQL: by id, runbook, cluster, or whose plan JSON has a string."""
        where: list[str] = ["1"]
        args: list[object] = []
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids)) or 'NULL'})")
            args.extend(ids)
        if runbook is not None:
            where.append("runbook = ?")
            args.append(runbook)
        if cluster is not None:
            where.append("cluster = ?")
            args.append(cluster)
        if plan_mentions is not None:
            where.append("instr(plan, ?) > 0")
            args.append(plan_mentions)
        query = f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY id"  # noqa: S608
        return {r["id"]: _to_run(r) for r in _rows(self.db, query, args)}

    @_named_errors
    def run_briefs(self, ids: Sequence[int] | None = None) -> dict[int, RunBrief]:
        """Runs by id (None: all) without their plans: the columns an export reads, where each was
        asked picked out in SQL and repeated names shared, a few hundred bytes a run."""
        where, args = "1", list(ids or ())
        if ids is not None:
            where = f"id IN ({','.join('?' * len(ids)) or 'NULL'})"
        query = (
            "SELECT id, runbook, version, status, requester, cluster, "  # noqa: S608
            "json_extract(source, '$.channel'), json_extract(source, '$.thread_ts') "
            f"FROM runs WHERE {where} ORDER BY id"
        )
        return {row[0]: _to_brief(row) for row in self.db.execute(query, args)}

    @_named_errors
    def run_ids_matching(self, where: EventFilter) -> list[int]:
        """The runs the events `where` selects belong to, in order, without reading the events."""
        sql, args = _where(where)
        query = (
            f"SELECT DISTINCT run_id FROM events WHERE {sql} AND run_id IS NOT NULL "  # noqa: S608
            "ORDER BY run_id"
        )
        return [int(row[0]) for row in self.db.execute(query, args)]

    @_named_errors
    def head_hash(self) -> str:
        """The chain head's hash (cheap: one row); `verify` proves it."""
        row = self.db.execute("SELECT last_hash FROM chain_head").fetchone()
        return str(row[0]) if row else ""

    @_named_errors
    def last_event_id(self) -> int:
        row = self.db.execute("SELECT last_event_id FROM chain_head").fetchone()
        return int(row[0]) if row else 0

    @_named_errors
    def events(self, run_id: int | None = None, after: int = 0) -> list[Event]:
        where, args = "id > ?", [after]
        if run_id is not None:
            where += " AND run_id = ?"
            args.append(run_id)
        query = f"SELECT * FROM events WHERE {where} ORDER BY id"  # noqa: S608
        return [_to_event(r) for r in _rows(self.db, query, args)]

    @_named_errors
    def events_matching(self, where: EventFilter, last: int = 0) -> list[Event]:
        """Events narrowed in SQL (a superset of what a report selects; `report.select` decides),
        so a report over one incident does not load a million events. `last` > 0: only that
        many of the newest."""
        sql, args = _where(where)
        if last > 0:
            query = f"SELECT * FROM events WHERE {sql} ORDER BY id DESC LIMIT ?"  # noqa: S608
            return [_to_event(r) for r in _rows(self.db, query, [*args, last])][::-1]
        query = f"SELECT * FROM events WHERE {sql} ORDER BY id"  # noqa: S608
        return [_to_event(r) for r in _rows(self.db, query, args)]

    def iter_events_matching(self, where: EventFilter, batch: int = WALK_BATCH) -> Iterator[Event]:
        """`events_matching` one batch of rows at a time, in id order, so an export of the whole
        log holds `batch` events rather than all of them. The read stays one statement (one
        snapshot of the log) until the iterator is used up or closed."""
        sql, args = _where(where)
        query = f"SELECT * FROM events WHERE {sql} ORDER BY id"  # noqa: S608
        try:
            cursor = self.db.execute(query, args)
            try:
                names = [c[0] for c in cursor.description]
                while rows := cursor.fetchmany(batch):
                    for row in rows:
                        yield _to_event(dict(zip(names, row, strict=True)))
                    rows.clear()  # or the next fetch holds two batches at once
            finally:
                cursor.close()
        except sqlite3.Error as exc:  # raised while iterating, so `_named_errors` cannot see it
            error = self.named_error(exc)
            if error is None:
                raise
            raise error from exc

    @_named_errors
    def count_matching(self, where: EventFilter) -> int:
        """How many events `events_matching` would load, without loading them."""
        sql, args = _where(where)
        row = self.db.execute(f"SELECT COUNT(*) FROM events WHERE {sql}", args).fetchone()  # noqa: S608
        return int(row[0])

    @_named_errors
    def runs_involving(self, user: str) -> list[int]:
        """Runs `user` asked for or acted on (approved, denied, cancelled)."""
        rows = self.db.execute(
            "SELECT id FROM runs WHERE requester = ? UNION "
            "SELECT DISTINCT run_id FROM events WHERE actor = ? AND run_id IS NOT NULL",
            [user, user],
        ).fetchall()
        return sorted(r[0] for r in rows)

    @_named_errors
    def verify(self) -> ChainReport:
        """Walk the whole chain, then hold the `runs` and `approvals` rows to it. Everything is
        read in one snapshot, so events committed meanwhile do not look inserted."""
        with self._snapshot() as db:
            head_rows = list(_rows(db, "SELECT last_event_id, last_hash FROM chain_head"))
            head = head_rows[0] if head_rows else None
            checkpoint = self.checkpoint()
            runs = ChainedRuns()
            report = self._walk_all(db, head, checkpoint, runs)
            if report is None:  # something does not check out: walk again to say what
                runs = ChainedRuns()
                report = verify_rows(
                    _rows(db, f"SELECT *, {FACTS} AS facts FROM events ORDER BY id"),  # noqa: S608
                    head,
                    checkpoint,
                    runs.see,
                    WATCHED,
                )
            if not report.ok:
                return report
            kept_from = None
            if checkpoint is not None:
                first = db.execute("SELECT ts FROM events WHERE id = ?", [report.first_id])
                kept_from = str((first.fetchone() or [""])[0])
            cluster = ", cluster" if "cluster" in self._columns("runs") else ""
            problem = runs.disagreement(
                _rows(db, f"SELECT {RUN_COLUMNS}{cluster} FROM runs ORDER BY id"),  # noqa: S608
                _rows(db, "SELECT run_id, approver, plan_hash FROM approvals ORDER BY id"),
                kept_from,
            )
        if problem is None:
            return report
        return dataclasses.replace(report, ok=False, event_id=problem[0], problem=problem[1])

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite_utils.Database]:
        """The database read in one snapshot (the caller's transaction, if it is in one)."""
        db = self.db
        own = not db.conn.in_transaction
        if own:
            db.execute("BEGIN")
        try:
            yield db
        finally:
            if own:
                db.execute("COMMIT")

    def _batches(
        self, db: sqlite_utils.Database, after: int = 0, through: int | None = None
    ) -> Iterator[list[tuple[Any, ...]]]:
        bound = "" if through is None else f" AND id <= {int(through)}"
        cursor = db.conn.execute(
            f"SELECT {walked(FACTS)} FROM events WHERE id > ?{bound} ORDER BY id",  # noqa: S608
            [after],
        )
        cursor.arraysize = WALK_BATCH
        while batch := cursor.fetchmany():
            yield batch

    def _exact(self, event_id: int, prev_hash: str) -> bool:
        rows = list(_rows(self.db, "SELECT * FROM events WHERE id = ?", [event_id]))
        try:
            return bool(rows) and event_hash(prev_hash, rows[0]) == rows[0]["hash"]
        except (TypeError, ValueError):  # not a value JSON holds: not what was hashed
            return False

    def _walk_all(
        self,
        db: sqlite_utils.Database,
        head: Mapping[str, Any] | None,
        checkpoint: Mapping[str, Any] | None,
        runs: ChainedRuns,
    ) -> ChainReport | None:
        """The whole chain walked fast; None when anything does not check out (`verify_rows`
        then names it)."""
        start = (
            (int(checkpoint["pruned_through"]), str(checkpoint["last_hash"]))
            if checkpoint
            else (0, GENESIS)
        )
        vouched: list[int] = []
        first: list[tuple[int, str]] = []

        def seen(row: tuple[Any, ...]) -> None:
            rid, kind, _, _, run_id, actor, facts = row[:7]
            if kind == EventKind.AUDIT_PRUNED:
                if checkpoint and vouches(row[9].decode(errors="replace"), checkpoint):
                    vouched.append(rid)
                return
            runs.see({"id": rid, "kind": kind, "run_id": run_id, "actor": actor, "facts": facts})

        def batches(through: int | None = None) -> Iterator[list[tuple[Any, ...]]]:
            for batch in self._batches(db, 0, through):
                if not first:
                    first.append((batch[0][0], batch[0][3]))
                yield batch

        special = WATCHED | {EventKind.AUDIT_PRUNED}
        last_id = int(db.execute("SELECT max(id) FROM events").fetchone()[0] or 0)
        middle = (start[0] + last_id) // 2
        # a fork is safe only where no other thread can hold a lock the child would inherit
        # (`audit verify` from the terminal); `serve`, with its threads, walks in one process
        if last_id - start[0] >= PARALLEL_FROM and threading.active_count() == 1:
            halves = self._walk_halves(batches(middle), start, middle, last_id, seen)
            if halves is None:
                return None
            count, last = halves
        else:
            count, last, bad = walk(batches(), start[0] + 1, start[1], self._exact, special, seen)
            if bad is not None:
                return None
        head_id = int(head["last_event_id"]) if head else 0
        if head is None and count:
            return None
        if at_the_end(head, last, start[0] + 1 + count) is not None:
            return None
        if checkpoint and not vouched:
            return None
        return ChainReport(
            True,
            count,
            last,
            head_id=head_id,
            first_id=first[0][0] if first else None,
            first_hash=first[0][1] if first else "",
            pruned_through=start[0] if checkpoint else 0,
            vouched_by=vouched[-1] if vouched else None,
        )

    def _walk_halves(
        self,
        first_half: Iterator[list[tuple[Any, ...]]],
        start: tuple[int, str],
        middle: int,
        last_id: int,
        seen: Callable[[tuple[Any, ...]], None],
    ) -> tuple[int, str] | None:
        """The chain walked fast in two halves at once: events after the middle id by a worker
        process on a read-only connection of its own, the rest here in the snapshot. The seam
        holds when the first half ends at the middle with the hash the second half's first
        event links to; anything else (a problem, or a prune committed since the snapshot
        began, which the worker may see) is None, and `verify_rows` walks again to say what."""
        # fork: the worker starts in milliseconds and needs no importable __main__ (spawn re-ran
        # the caller's script and cost more than it saved); it opens a connection of its own
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            second = pool.apply_async(_walk_range, (self.path, middle, last_id))
            special = WATCHED | {EventKind.AUDIT_PRUNED}
            count, last, bad = walk(first_half, start[0] + 1, start[1], self._exact, special, seen)
            rest = second.get()
        if bad is not None or count != middle - start[0] or rest is None:
            return None
        rest_count, linked_to, rest_last, rows = rest
        if linked_to != last or rest_count != last_id - middle:
            return None
        for row in rows:
            seen(row)
        return count + rest_count, rest_last

    @_named_errors
    def verify_recent(self) -> ChainReport:
        """The chain checked from the newest `audit_verified` marker to the head, when that
        marker checks out: it is itself a chained event (walked with the rest), the event it
        names is there with the hash it recorded and that hash is the event's own, and the log
        still starts where it said. Any doubt, a problem found on the way, or no marker, and
        the whole chain is verified instead (which names the problem). What the marker
        vouches for was verified when it was recorded; `verify` checks all of it again."""
        with self._snapshot() as db:
            marker = db.execute(
                "SELECT id, ts, data FROM events WHERE kind = ? ORDER BY id DESC LIMIT 1",
                [str(EventKind.AUDIT_VERIFIED)],
            ).fetchone()
            claim = _marker_claim(marker[2]) if marker else None
            if marker is None or claim is None or not self._marker_holds(db, marker[0], claim):
                return self.verify()
            upto, upto_hash = claim["upto"], claim["hash"]
            head_rows = list(_rows(db, "SELECT last_event_id, last_hash FROM chain_head"))
            head = head_rows[0] if head_rows else None
            count, last, bad = walk(
                self._batches(db, after=upto),
                upto + 1,
                upto_hash,
                self._exact,
                frozenset(),
                lambda row: None,
            )
            if bad is not None or head is None or at_the_end(head, last, upto + 1 + count):
                return self.verify()
            return ChainReport(
                True,
                count,
                last,
                head_id=int(head["last_event_id"]),
                first_id=claim["first_id"],
                first_hash=claim["first_hash"],
                pruned_through=int(claim.get("pruned_through") or 0),
                vouched_by=claim.get("vouched_by"),
                verified_from=upto,
                verified_at=str(marker[1]),
                marker=int(marker[0]),
            )

    def _marker_holds(
        self, db: sqlite_utils.Database, marker_id: int, claim: dict[str, Any]
    ) -> bool:
        """The marker comes after the event it names, which is there with the recorded hash,
        its own (re-hashed from its content and link); the first kept event is the one the
        marker saw (a prefix deleted since, or a later prune, takes the whole walk)."""
        if not claim["upto"] < marker_id:
            return False
        rows = list(_rows(db, "SELECT * FROM events WHERE id = ?", [claim["upto"]]))
        if not rows or rows[0]["hash"] != claim["hash"]:
            return False
        if event_hash(str(rows[0]["prev_hash"]), rows[0]) != claim["hash"]:
            return False
        first = db.execute("SELECT id, hash FROM events ORDER BY id LIMIT 1").fetchone()
        return first is not None and (first[0], first[1]) == (
            claim["first_id"],
            claim["first_hash"],
        )

    def record_verified(self, report: ChainReport) -> Event | None:
        """Chain an `audit_verified` marker for a full verification that passed, so a report
        walks only the events after it (`verify_recent`). Written by the serve process with
        each head it posts, never by `audit verify`, which stays read-only."""
        if not report.ok or report.marker is not None or report.first_id is None:
            return None
        return self.record(
            EventKind.AUDIT_VERIFIED,
            actor=None,
            data={
                "upto": report.head_id,
                "hash": report.head_hash,
                "first_id": report.first_id,
                "first_hash": report.first_hash,
                "events": report.events,
                "pruned_through": report.pruned_through,
                "vouched_by": report.vouched_by,
            },
        )

    @_named_errors
    def checkpoint(self) -> dict[str, Any] | None:
        """The newest prune checkpoint: the chain starts after the event it names (if a chained
        `audit_pruned` event vouches for it)."""
        if self.read_only and "checkpoints" not in self._tables():  # a log from before pruning
            return None
        rows = list(_rows(self.db, "SELECT * FROM checkpoints ORDER BY id DESC LIMIT 1"))
        return rows[0] if rows else None

    def prune(self, before: datetime) -> dict[str, Any]:
        """Delete events older than `before`, keeping the chain verifiable: a checkpoint keeps
        the last pruned event's hash, and an `audit_pruned` event, chained in the same
        transaction, vouches for it (verification refuses a checkpoint without one). Events of
        runs that have not ended are never pruned, and a chain that does not verify is not
        pruned at all: the new checkpoint would vouch for whatever was deleted before it."""
        chain = self.verify()
        if not chain.ok:
            raise AuditChainBroken(
                f"the audit log {self.path} does not verify ({chain.describe()}), so nothing was "
                "pruned: pruning now would vouch for what was removed. Run `flannel-bot audit "
                "verify`, compare with the heads posted to Slack, and restore the file from a "
                "backup"
            )
        with self.transaction() as tx:
            db = tx.db
            active = db.execute(
                "SELECT MIN(e.id) FROM events e JOIN runs r ON e.run_id = r.id WHERE r.status IN "
                "('running', 'awaiting_approval')"
            ).fetchone()[0]
            last = db.execute(
                "SELECT MAX(id) FROM events WHERE ts < ? AND id < ?",
                [iso(before), active if active else 2**62],
            ).fetchone()[0]
            if last is None:
                return {"events": 0, "pruned_through": None}
            floor = self.checkpoint()
            first = floor["pruned_through"] + 1 if floor else 1
            last_hash = db.execute("SELECT hash FROM events WHERE id = ?", [last]).fetchone()[0]
            db.execute("INSERT INTO prune_guard (id) VALUES (1)")
            db.execute("DELETE FROM events WHERE id <= ?", [last])
            db.execute("DELETE FROM prune_guard")
            result = {
                "pruned_through": last,
                "last_hash": last_hash,
                "events": last - first + 1,
                "before": iso(before),
            }
            db.table("checkpoints").insert({**result, "pruned_at": iso(self.clock.now())})
            tx.record(EventKind.AUDIT_PRUNED, actor=None, data=result)
        return result


_BROKEN_ADVICE = (
    "Run `flannel-bot audit verify` to see what else was changed, then restore the file from a "
    "backup (or move it aside to start a new log); nothing was recorded"
)


def _walk_range(
    path: Path, after: int, through: int
) -> tuple[int, str, str, list[tuple[Any, ...]]] | None:
    """`verify`'s second half, in a worker process: events after `after` through `through`
    walked fast on a read-only connection, linked from what the first one says came before.
    (events checked, the hash the first links to, the last one's hash, the events `seen`
    gets, without their large columns), or None when an event does not check out."""
    store = SqliteStore(path, SystemClock(), read_only=True)
    try:
        rows: list[tuple[Any, ...]] = []

        def seen(row: tuple[Any, ...]) -> None:
            pruned = row[1] == EventKind.AUDIT_PRUNED
            rows.append((*row[:7], None, None, row[9] if pruned else None))

        with store._snapshot() as db:
            batches = store._batches(db, after, through)
            first = next(batches, [])
            if not first:
                return None
            linked_to = first[0][2]
            special = WATCHED | {EventKind.AUDIT_PRUNED}
            count, last, bad = walk(
                itertools.chain([first], batches), after + 1, linked_to, store._exact, special, seen
            )
        return None if bad is not None else (count, linked_to, last, rows)
    finally:
        store.close()


def _marker_claim(data: str) -> dict[str, Any] | None:
    """What an `audit_verified` event's data claims, if it has the shape the store writes."""
    try:
        said = json.loads(data)
    except ValueError:
        return None
    if not isinstance(said, dict):
        return None
    ints = ("upto", "first_id")
    if not all(type(said.get(k)) is int for k in ints):
        return None
    if not all(isinstance(said.get(k), str) for k in ("hash", "first_hash")):
        return None
    return said


def _unwritable(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(k in text for k in ("disk is full", "readonly", "read-only", "disk i/o error"))


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
