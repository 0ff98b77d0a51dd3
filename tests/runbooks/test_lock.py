"""Changing a shipped runbook's code without bumping its version must fail here."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest

from flannel_bot.errors import RunbookLockMismatch
from flannel_bot.runs.registry import Registry, hashed_text, lock_path, read_lock


def test_every_runbook_version_matches_the_lock_file() -> None:
    registry = Registry.from_package()
    problems = registry.lock_problems(read_lock(lock_path()))
    assert problems == [], "\n".join(f"{p.ref} {p.problem}" for p in problems)


def test_several_versions_coexist_and_the_newest_is_default() -> None:
    registry = Registry.from_package()
    refs = [rb.ref for rb in registry.all()]
    assert {f"flannel.restart-pods@1.{n}.0" for n in range(3)} <= set(refs)
    assert registry.get("flannel.restart-pods").ref == "flannel.restart-pods@1.2.0"


@pytest.fixture
def copied_runbooks(tmp_path: Path) -> tuple[str, Path]:
    """A copy of the runbooks package under a new name, importable, to be edited."""
    name = f"rb_copy_{tmp_path.name.replace('-', '_')}"
    shutil.copytree(
        lock_path().parent, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")
    )
    sys.path.insert(0, str(tmp_path))
    yield name, tmp_path / name
    sys.path.remove(str(tmp_path))
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def test_editing_code_without_a_version_bump_is_caught(copied_runbooks: tuple[str, Path]) -> None:
    name, folder = copied_runbooks
    module = folder / "flannel_restart_pods_v1_0_0.py"
    module.write_text(
        module.read_text().replace('LABEL = "app=flannel"', 'LABEL = "k8s-app=flannel"')
    )
    importlib.invalidate_caches()
    registry = Registry.from_package(name)
    problems = registry.lock_problems(read_lock(folder / "runbooks.lock"))
    assert [(p.ref, "changed since it was locked" in p.problem) for p in problems] == [
        ("flannel.restart-pods@1.0.0", True)
    ]
    with pytest.raises(RunbookLockMismatch, match="bump VERSION"):
        registry.updated_lock(read_lock(folder / "runbooks.lock"))


def test_a_new_version_must_be_recorded(copied_runbooks: tuple[str, Path]) -> None:
    name, folder = copied_runbooks
    src = (folder / "flannel_restart_pods_v1_2_0.py").read_text()
    (folder / "flannel_restart_pods_v1_3_0.py").write_text(
        src.replace('VERSION = "1.2.0"', 'VERSION = "1.3.0"')
    )
    importlib.invalidate_caches()
    registry = Registry.from_package(name)
    lock = read_lock(folder / "runbooks.lock")
    assert [p.ref for p in registry.lock_problems(lock)] == ["flannel.restart-pods@1.3.0"]
    assert registry.lock_problems(registry.updated_lock(lock)) == []
    assert registry.get("flannel.restart-pods").ref == "flannel.restart-pods@1.3.0"


def test_editing_a_shared_helper_changes_every_runbook_that_imports_it(
    copied_runbooks: tuple[str, Path],
) -> None:
    name, folder = copied_runbooks
    helper = folder / "_common.py"
    helper.write_text(helper.read_text() + "\n# a harmless-looking edit\n")
    importlib.invalidate_caches()
    registry = Registry.from_package(name)
    changed = {p.ref for p in registry.lock_problems(read_lock(folder / "runbooks.lock"))}
    users = {
        rb.ref
        for rb in registry.all()
        if "_common" in Path(sys.modules[rb.module].__file__ or "").read_text()
    }
    assert "node.fix-br-netfilter@1.0.0" in users and "node.check@1.0.0" not in users
    assert changed == users


def test_the_hash_reads_the_import_names_as_they_were_locked() -> None:
    """Versions locked as `from bot...` keep their hash under `from flannel_bot...`; any other
    change to the bytes still changes it."""
    renamed = b"from flannel_bot.runbook import step\nfrom flannel_bot_runbooks import _common\n"
    assert hashed_text(renamed) == b"from bot.runbook import step\nfrom runbooks import _common\n"
    assert hashed_text(b"flannel_bots = 1\n") == b"flannel_bots = 1\n"
