"""The audit log and run state in one SQLite file: the `Store` port's implementation.

The only code that imports sqlite3 and sqlite_utils: the hash chain, runs, approvals, change
locks, deliveries and migrations, with secrets scrubbed before anything is written.
"""

from flannel_bot.store.database import SqliteStore, SqliteTx

__all__ = ["SqliteStore", "SqliteTx"]
