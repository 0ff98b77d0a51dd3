"""The CLI as a first-time user meets it: no config file, no kubeconfig, an empty HOME, run from
a directory outside the checkout. Commands that need no cluster answer; the others say what is
missing; `--help` and a usage error leave the audit log as it was."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import FLANNEL_BOT

pytestmark = pytest.mark.integration

HEAVY = ("kubernetes", "paramiko", "slack_bolt", "slack_sdk", "waitress")


class Newcomer:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.cwd = root / "elsewhere"
        self.home.mkdir()
        self.cwd.mkdir()
        self.db = self.home / ".local" / "state" / "flannel-bot" / "flannel-bot.db"

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "KUBECONFIG": "/nonexistent",
            "USER": "alice",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLANNEL_BOT, *args],
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def events(self) -> list[tuple[str, str]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute("SELECT kind, data FROM events ORDER BY id"))


@pytest.fixture
def newcomer(tmp_path: Path) -> Newcomer:
    return Newcomer(tmp_path)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["help"], "flannel.restart-pods"),
        (["runbooks"], "flannel.restart-pods@1.1.0"),
        (["status"], ""),
        (["audit"], ""),
        (["audit", "report"], "**Audit chain:** verified"),
        (["audit", "prune"], "retention_days is 0"),
    ],
)
def test_commands_that_need_no_cluster_do_not_ask_for_one(
    newcomer: Newcomer, args: list[str], says: str
) -> None:
    proc = newcomer.run(*args)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "kubeconfig" not in proc.stderr + proc.stdout
    assert says in proc.stdout


def test_the_audit_log_of_those_commands_verifies_without_a_cluster(newcomer: Newcomer) -> None:
    assert newcomer.run("status").returncode == 0
    proc = newcomer.run("audit", "verify")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("audit chain OK")


def test_doctor_names_the_missing_cluster_and_checks_the_rest(newcomer: Newcomer) -> None:
    proc = newcomer.run("doctor")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("OK   config")
    assert any(x.startswith("OK   audit log") for x in lines), proc.stdout
    cluster = next(x for x in lines if x.startswith("FAIL cluster"))
    assert "/nonexistent" in cluster
    assert any(x.startswith("WARN slack: not configured") for x in lines), proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_command_that_needs_the_cluster_says_so_and_records_nothing(
    newcomer: Newcomer,
) -> None:
    proc = newcomer.run("diagnose", "w2")
    assert proc.returncode == 2
    assert "kubeconfig /nonexistent does not exist" in proc.stderr
    assert newcomer.events() == []


@pytest.mark.parametrize(
    "args",
    [
        ["help"],
        ["runbooks"],
        ["runbooks", "lock"],
        ["status"],
        ["audit"],
        ["audit", "verify"],
        ["audit", "report"],
        ["audit", "prune"],
        ["doctor"],
        ["serve"],
        ["shell"],
        ["diagnose"],
        ["diagnose", "--dump", "DIR"],
        ["collect"],
        ["plan"],
        ["run"],
        ["approve"],
        ["deny"],
        ["cancel"],
    ],
)
def test_every_command_has_its_own_help_and_leaves_no_trace(
    newcomer: Newcomer, args: list[str]
) -> None:
    proc = newcomer.run(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"usage: flannel-bot {args[0]}"), proc.stdout
    if args[1:2] and not args[1].isupper():  # a subcommand's help is about the subcommand
        assert args[1] in first, proc.stdout
    assert "/flannel>" not in proc.stdout  # no prompt opened
    assert not newcomer.db.exists()


def test_an_unknown_command_s_help_and_a_usage_error_leave_no_trace(newcomer: Newcomer) -> None:
    for args in (["bogus", "--help"], ["collect"], ["--user"]):
        proc = newcomer.run(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: "), proc.stderr
    assert not newcomer.db.exists()


def heavy_modules_after(newcomer: Newcomer, args: list[str], heavy: tuple[str, ...]) -> str:
    """`bot.cli.main(args)` in a fresh interpreter: "HEAVY <heavy modules imported> <exit>"."""
    probe = (
        "import sys\n"
        "from flannel_bot.cli import main\n"
        f"code = main({args!r})\n"
        f"heavy = sorted(m for m in {heavy!r} if m in sys.modules)\n"
        "print('HEAVY', ' '.join(heavy), code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=newcomer.cwd,
        env=newcomer.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    return lines[-1] if lines else proc.stdout[-500:] + proc.stderr


def test_help_does_not_import_the_cluster_ssh_or_slack_clients(newcomer: Newcomer) -> None:
    """Start-up time: `help` loads none of the heavy clients (bench/startup.py times it)."""
    assert heavy_modules_after(newcomer, ["help"], HEAVY) == "HEAVY  0"


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["audit", "prune", "--help"]])
def test_help_text_loads_neither_templates_nor_the_audit_log(
    newcomer: Newcomer, args: list[str]
) -> None:
    """`--help` prints text it holds: no jinja2, no SQLite layer, no clients."""
    heavy = (*HEAVY, "jinja2", "sqlite_utils")
    assert heavy_modules_after(newcomer, args, heavy) == "HEAVY  0"
