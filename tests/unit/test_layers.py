"""The walls hold: the import contracts (`make imports`) pass on the tree, fail on a planted
violation, and the pure wings load no I/O library when imported."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def copy_of_the_tree(where: Path) -> Path:
    for name in ("bot", "runbooks"):
        shutil.copytree(REPO / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("flannel_bot", "flannel_bot_runbooks"):  # the import names: links, as checked in
        (where / name).symlink_to((REPO / name).readlink())
    shutil.copy(REPO / "pyproject.toml", where / "pyproject.toml")
    return where


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy, which it imports from (PYTHONPATH first, before the install)."""
    assert LINT_IMPORTS.exists(), "import-linter is not installed: pip install -e '.[dev]'"
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def plant(path: Path, after: str, line: str) -> None:
    text = path.read_text()
    assert after in text, f"{after!r} is not in {path}"
    path.write_text(text.replace(after, f"{after}{line}\n", 1))


def test_the_tree_keeps_its_contracts(tmp_path: Path) -> None:
    result = lint_imports(copy_of_the_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "after", "planted", "broken"),
    [
        (
            "bot/runs/plan.py",
            "import hashlib\n",
            "import sqlite3",
            "flannel_bot.runs is not allowed to import sqlite3",
        ),
        (
            "bot/diagnosis/evidence.py",
            "import json\n",
            "from flannel_bot.runs import engine",
            "flannel_bot.diagnosis is not allowed to import flannel_bot.runs",
        ),
        (
            "bot/store/audit.py",
            "import hashlib\n",
            "from flannel_bot.runs import plan",
            "flannel_bot.store is not allowed to import flannel_bot.runs",
        ),
        (
            "bot/service/views.py",
            "import dataclasses\n",
            "import slack_sdk",
            "flannel_bot.service is not allowed to import slack_sdk",
        ),
        (
            "runbooks/_common.py",
            "import json\n",
            "from flannel_bot.runs import engine",
            "flannel_bot_runbooks is not allowed to import flannel_bot.runs",
        ),
    ],
)
def test_a_planted_violation_breaks_the_check(
    tmp_path: Path, module: str, after: str, planted: str, broken: str
) -> None:
    tree = copy_of_the_tree(tmp_path)
    plant(tree / module, after, planted)
    result = lint_imports(tree)
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout


@pytest.mark.parametrize(
    "module", ["flannel_bot.runs.engine", "flannel_bot.service.handler", "flannel_bot.runbook"]
)
def test_the_pure_wings_load_no_io_library(module: str) -> None:
    probe = (
        f"import sys, {module}; "
        "print(' '.join(m for m in ('sqlite3', 'sqlite_utils', 'paramiko', 'slack_sdk', "
        "'slack_bolt', 'kubernetes', 'jinja2') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    assert loaded == []


def test_nothing_imports_the_folders_by_their_own_names() -> None:
    """From the checkout `bot` and `runbooks` still import (their folders are there), beside the
    same files as `flannel_bot`: a second copy of every module and class. Only the import names."""
    found = []
    for folder in ("bot", "runbooks", "tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                found += [
                    f"{path.relative_to(REPO)}:{node.lineno} {name}"
                    for name in names
                    if name.split(".")[0] in {"bot", "runbooks"}
                ]
    assert found == []
