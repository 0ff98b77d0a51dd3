from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")
# these tests play alice, bob and carol from one login, so --user names who approves; the
# default, the login itself, is held in test_terminal_identity.py
ASSERTED_APPROVER = '[terminal]\napprover = "asserted"\n'


@dataclass
class BotEnv:
    """A config, a recorded cluster and a database in tmp_path, driven through the real CLI."""

    root: Path
    config: Path
    db: Path
    cluster: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNEL_BOT_")}
        return {**env, "FLANNEL_BOT_CONFIG": str(self.config), **extra}

    def cli(
        self, *args: str, user: str = "alice", check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [FLANNEL_BOT, "--user", user, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
        return proc

    def popen(self, *args: str, user: str = "alice", **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [FLANNEL_BOT, "--user", user, *args], env=self.env(), text=True, **kw
        )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
        conn.close()
        for r in rows:
            r["data"] = json.loads(r["data"])
        return [r for r in rows if kind is None or r["kind"] == kind]


@pytest.fixture
def make_env(tmp_path: Path) -> Callable[..., BotEnv]:
    def make(
        restart_seconds: float = 1, approvals: int = 1, terminal: str = ASSERTED_APPROVER
    ) -> BotEnv:
        cluster = json.loads((REPO / "examples" / "cluster.json").read_text())
        cluster["daemonset_restart_seconds"] = restart_seconds
        (tmp_path / "cluster.json").write_text(json.dumps(cluster))
        config = tmp_path / "flannel-bot.toml"
        config.write_text(
            'db = "state/audit.db"\nrecording = "cluster.json"\ncheck_interval = 0.2\n'
            f"[policy]\napprovals = {approvals}\n"
            '[policy.groups]\noperators = ["alice"]\napprovers = ["bob", "carol", "dave"]\n'
            + terminal
        )
        return BotEnv(tmp_path, config, tmp_path / "state" / "audit.db", tmp_path / "cluster.json")

    return make


@pytest.fixture
def env(make_env: Callable[..., BotEnv]) -> BotEnv:
    return make_env()
