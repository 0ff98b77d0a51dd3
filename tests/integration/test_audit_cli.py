"""`flannel-bot audit ...` as a real subprocess on real SQLite files: verifying a read-only or
forensic copy, a damaged log, and report dates that do not exist."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import FLANNEL_BOT, BotEnv

pytestmark = pytest.mark.integration


def a_log(env: BotEnv) -> None:
    env.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", check=True)
    env.cli("approve", "1", user="bob", check=True)


def forensic_copy(env: BotEnv, where: Path) -> Path:
    """A copy as an investigator keeps it: one file, no write permission, in a directory
    nobody may write either."""
    where.mkdir()
    copy = where / "evidence.db"
    src, dst = sqlite3.connect(env.db), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    copy.chmod(0o444)
    where.chmod(0o555)
    return copy


def as_nobody() -> list[str]:
    """Root ignores file modes; as root, run the CLI as nobody so the modes are enforced."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def evidence_dir() -> Iterator[Path]:
    """A directory anyone may reach (pytest's tmp_path is private to its user)."""
    top = Path(tempfile.mkdtemp(prefix="flannel-evidence-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        for path in (top, *top.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(top)


def test_audit_verify_checks_a_read_only_copy_and_changes_nothing(
    env: BotEnv, evidence_dir: Path
) -> None:
    a_log(env)
    copy = forensic_copy(env, evidence_dir / "case-17")
    before, listing = digest(copy), sorted(os.listdir(copy.parent))
    bare = {k: v for k, v in env.env().items() if k != "FLANNEL_BOT_CONFIG"}
    proc = subprocess.run(
        [*as_nobody(), FLANNEL_BOT, "--db", str(copy), "audit", "verify"],
        env={**bare, "HOME": str(evidence_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.startswith("audit chain OK"), proc.stdout
    # as root too (who could write it): nothing is recorded, no journal appears beside it
    again = env.cli("--db", str(copy), "audit", "verify")
    assert again.returncode == 0 and again.stdout.startswith("audit chain OK"), again.stderr
    assert digest(copy) == before and sorted(os.listdir(copy.parent)) == listing


def test_audit_verify_reads_a_live_log_without_writing_to_it(env: BotEnv) -> None:
    a_log(env)
    count = len(env.events())
    for _ in range(2):
        assert env.cli("audit", "verify", check=True).stdout.startswith("audit chain OK")
    assert len(env.events()) == count


def test_audit_verify_of_a_log_without_its_chain_head_says_broken(env: BotEnv) -> None:
    a_log(env)
    conn = sqlite3.connect(env.db)
    conn.execute("DELETE FROM chain_head")
    conn.commit()
    conn.close()
    proc = env.cli("audit", "verify")
    assert proc.returncode == 1
    assert "BROKEN" in proc.stdout and "chain_head row is missing" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    other = env.cli("status")  # any command that would record: a named error, no traceback
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "chain_head" in other.stderr and "audit verify" in other.stderr


def test_a_damaged_file_gets_a_named_error(env: BotEnv) -> None:
    env.db.parent.mkdir(parents=True, exist_ok=True)
    env.db.write_bytes(b"not an audit log\n" * 512)
    for args in (["audit", "verify"], ["status"]):
        proc = env.cli(*args)
        assert proc.returncode == 1, args
        assert "Traceback" not in proc.stderr and str(env.db) in proc.stderr
        assert "not a SQLite database" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--since", "999999w"], "`since=999999w` is longer than"),
        (["--from", "2026-13-45"], "`from=2026-13-45` is not a date: month must be in 1..12"),
    ],
)
def test_bad_report_dates_exit_2_with_one_line(env: BotEnv, words: list[str], message: str) -> None:
    proc = env.cli("audit", "report", *words)
    assert proc.returncode == 2, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("error: ") and message in first, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
