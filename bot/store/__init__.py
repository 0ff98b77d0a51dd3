"""The only code that imports sqlite_utils: audit log, runs, approvals, change locks, migrations."""

from bot.store.database import Store, Tx

__all__ = ["Store", "Tx"]
