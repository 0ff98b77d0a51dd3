"""One SQLite file holding the audit chain and the state of every run.

WAL with `synchronous=FULL`: a committed event survives power loss, and a killed process loses at
most the transaction it was in. Every write goes through `Store.transaction()`, which takes SQLite's
write lock up front (BEGIN IMMEDIATE), so state changes and their audit events commit together and
concurrent approvers, threads or processes, are serialised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.errors import AuditLogUnwritable, TargetBusy, UnknownRun
from bot.ports.clock import Clock, iso
from bot.ports.store import (
    Approval,
    ChainReport,
    Event,
    EventFilter,
    EventKind,
    RunRecord,
    RunStatus,
)
from bot.store.audit import GENESIS, event_hash, verify_rows
from bot.store.migrations import MIGRATIONS
from bot.store.redact import scrub

log = logging.getLogger(__name__)


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


def _to_event(r: dict[str, Any]) -> Event:
    source, data = json.loads(r["source"]), json.loads(r["data"])
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
            row = self.db.execute("SELECT last_event_id, last_hash FROM chain_head").fetchone()
            self._head = (int(row[0]), str(row[1])) if row else (0, GENESIS)
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
        self.db.execute(
            "INSERT INTO events (id, ts, kind, run_id, actor, source, data, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [*row_in.values(), prev_hash, digest],
        )
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
        a redelivery or a double click), so the caller does nothing the second time."""
        try:
            _insert(
                self.db, "deliveries", {"key": key, "source": source, "received_at": self.now()}
            )
        except sqlite3.IntegrityError:
            return False
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


class SqliteStore:
    """Opens the database per thread, migrates it, and hands out transactions."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._local = threading.local()
        self._listeners: list[Callable[[Event], None]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Called with every event after its transaction commits (the notifiers)."""
        self._listeners.append(listener)

    @property
    def db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA busy_timeout=60000")
            except sqlite3.OperationalError as exc:
                conn.close()
                raise self._unwritable(exc) from exc
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def _unwritable(self, exc: sqlite3.OperationalError) -> Exception:
        if not _unwritable(exc):
            return exc
        return AuditLogUnwritable(
            f"the audit log {self.path} cannot be written ({exc}); nothing was done that it "
            "does not record. Free space on that disk (or make it writable) and try again"
        )

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @contextmanager
    def transaction(self) -> Iterator[SqliteTx]:
        """One atomic write. A disk that cannot take it (full, read-only) ends the caller's work
        with AuditLogUnwritable before anything the write was to record is applied."""
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
        except sqlite3.OperationalError as exc:
            if not _unwritable(exc):
                raise
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise self._unwritable(exc) from exc
        for event in tx.events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    # a broken notifier must not turn a committed step into a crashed run
                    log.exception("event listener failed on event %s (%s)", event.id, event.kind)

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

    def approvals_of(self, run: RunRecord) -> list[Approval]:
        """The approvals given to the run's current plan."""
        return SqliteTx(self.db, self.clock).approvals(run.id, run.plan_hash)

    def run(self, run_id: int) -> RunRecord:
        return SqliteTx(self.db, self.clock).get_run(run_id)

    def recent_runs(self, limit: int = 20, cluster: str | None = None) -> list[RunRecord]:
        where, args = ("WHERE cluster = ?", [cluster]) if cluster else ("", [])
        return [
            _to_run(r)
            for r in _rows(
                self.db,
                f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
                [*args, limit],
            )
        ]

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

    def head_hash(self) -> str:
        """The chain head's hash (cheap: one row); `verify` proves it."""
        row = self.db.execute("SELECT last_hash FROM chain_head").fetchone()
        return str(row[0]) if row else ""

    def last_event_id(self) -> int:
        row = self.db.execute("SELECT last_event_id FROM chain_head").fetchone()
        return int(row[0]) if row else 0

    def events(self, run_id: int | None = None, after: int = 0) -> list[Event]:
        where, args = "id > ?", [after]
        if run_id is not None:
            where += " AND run_id = ?"
            args.append(run_id)
        query = f"SELECT * FROM events WHERE {where} ORDER BY id"  # noqa: S608
        return [_to_event(r) for r in _rows(self.db, query, args)]

    def events_matching(self, where: EventFilter) -> list[Event]:
        """Events narrowed in SQL (a superset of what a report selects; `report.select` decides),
        so a report over one incident does not load a million events."""
        sql, args = _where(where)
        query = f"SELECT * FROM events WHERE {sql} ORDER BY id"  # noqa: S608
        return [_to_event(r) for r in _rows(self.db, query, args)]

    def count_matching(self, where: EventFilter) -> int:
        """How many events `events_matching` would load, without loading them."""
        sql, args = _where(where)
        row = self.db.execute(f"SELECT COUNT(*) FROM events WHERE {sql}", args).fetchone()  # noqa: S608
        return int(row[0])

    def runs_involving(self, user: str) -> list[int]:
        """Runs `user` asked for or acted on (approved, denied, cancelled)."""
        rows = self.db.execute(
            "SELECT id FROM runs WHERE requester = ? UNION "
            "SELECT DISTINCT run_id FROM events WHERE actor = ? AND run_id IS NOT NULL",
            [user, user],
        ).fetchall()
        return sorted(r[0] for r in rows)

    def verify(self) -> ChainReport:
        head = list(_rows(self.db, "SELECT last_event_id, last_hash FROM chain_head"))
        rows = _rows(self.db, "SELECT * FROM events ORDER BY id")
        checkpoint = self.checkpoint()
        start = (checkpoint["pruned_through"], checkpoint["last_hash"]) if checkpoint else None
        if start is None:
            return verify_rows(rows, head[0] if head else None)
        return verify_rows(rows, head[0] if head else None, start)

    def checkpoint(self) -> dict[str, Any] | None:
        """The newest prune checkpoint: the chain starts after the event it names."""
        rows = list(_rows(self.db, "SELECT * FROM checkpoints ORDER BY id DESC LIMIT 1"))
        return rows[0] if rows else None

    def prune(self, before: datetime) -> dict[str, Any]:
        """Delete events older than `before`, keeping the chain verifiable: a checkpoint keeps
        the last pruned event's hash, and a `audit_pruned` event records the pruning itself.
        Events of runs that have not ended are never pruned."""
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


def _unwritable(exc: sqlite3.OperationalError) -> bool:
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
