"""Schema migrations, applied in order; each is recorded in `schema_migrations`.

Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: audit chain, runs, approvals, change locks
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        run_id INTEGER,
        actor TEXT,
        source TEXT NOT NULL,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX events_run ON events(run_id);
    CREATE INDEX events_ts ON events(ts);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    CREATE TABLE chain_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_event_id INTEGER NOT NULL,
        last_hash TEXT NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        runbook TEXT NOT NULL,
        version TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        params TEXT NOT NULL,
        requester TEXT NOT NULL,
        source TEXT NOT NULL,
        plan TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        approved_plan_hash TEXT,
        status TEXT NOT NULL,
        next_step INTEGER NOT NULL DEFAULT 0,
        current_step INTEGER,
        approvals_required INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at TEXT,
        owner TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX runs_status ON runs(status);
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        approver TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        UNIQUE (run_id, approver, plan_hash)
    );
    CREATE TABLE target_locks (
        target TEXT PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        requester TEXT NOT NULL,
        acquired_at TEXT NOT NULL
    );
    """,
    # 2: deliveries already handled, so a retried or redelivered request is done once
    """
    CREATE TABLE deliveries (
        key TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    """,
    # 3: retention. Old events may be pruned, only through Store.prune: the delete trigger lets a
    # delete through while prune_guard holds a row (set and cleared in the same transaction),
    # and a checkpoint keeps the hash of the last pruned event, where verification starts.
    """
    CREATE TABLE prune_guard (id INTEGER PRIMARY KEY CHECK (id = 1));
    DROP TRIGGER events_no_delete;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        WHEN NOT EXISTS (SELECT 1 FROM prune_guard)
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        pruned_through INTEGER NOT NULL,
        last_hash TEXT NOT NULL,
        events INTEGER NOT NULL,
        before TEXT NOT NULL,
        pruned_at TEXT NOT NULL
    );
    CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
        BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
    CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
        BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
    """,
    # 4: one bot, several clusters: each run names the cluster it was planned on and acts on
    """
    ALTER TABLE runs ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX runs_cluster ON runs(cluster);
    """,
    # 5: reports of one Slack channel or thread (the default in Slack) find their events by index
    """
    CREATE INDEX events_channel ON events(json_extract(source, '$.channel'));
    CREATE INDEX events_thread ON events(json_extract(source, '$.thread_ts'));
    """,
    # 6: deliveries are forgotten once Slack no longer retries them (on every new one), by index
    """
    CREATE INDEX deliveries_received ON deliveries(received_at);
    """,
    # 7: a report finds the newest `audit_verified` marker without reading the log backwards
    """
    CREATE INDEX events_verified ON events(id) WHERE kind = 'audit_verified';
    """,
]
