"""Finding runbook versions, pinning each to a hash of its code, and checking the lock file.

Reading each module's source to hash it is the one piece of I/O here: a run is pinned to
`id@version` plus that hash, and the lock file makes "changed the code, kept the version" a failure.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from flannel_bot.errors import RunbookLockMismatch, UnknownRunbook
from flannel_bot.runs.actions import Risk
from flannel_bot.runs.params import check_params_class
from flannel_bot.runs.runbook import RUNBOOK_ID, Runbook, Step, Version

LOCK_FILE = "runbooks.lock"
# the runbooks' import name: the checkout's runbooks/ folder, installed under a name of its own
RUNBOOKS_PACKAGE = "flannel_bot_runbooks"


class RunbookDefinitionError(TypeError):
    """A runbook module does not follow the runbook API; a bug in that module."""


# The package's import names as the source is hashed: written as they were before the package had
# names of its own (`bot`, `runbooks`), because renaming what a runbook imports does not change
# what it does, and hashes pinned in audit logs and approvals before the rename stay valid.
_IMPORT_NAMES = re.compile(rb"\bflannel_bot(_runbooks)?\b")


def hashed_text(source: bytes) -> bytes:
    """The bytes a runbook's hash covers: its source with the package's import names normalised."""
    return _IMPORT_NAMES.sub(lambda m: b"runbooks" if m[1] else b"bot", source)


def code_hash(module: ModuleType) -> str:
    """The module's source plus the package-private helpers (`_name.py`) it imports, so a change
    to shared runbook code changes the hash of every runbook that uses it."""
    path = module.__file__
    if path is None:
        raise RunbookDefinitionError(f"{module.__name__} has no source file to hash")
    source = Path(path).read_bytes()
    digest = hashlib.sha256(hashed_text(source))
    for helper in _private_imports(module.__name__, source):
        helper_path = Path(path).with_name(f"{helper}.py")
        if helper_path.is_file():
            digest.update(b"\0" + helper.encode() + b"\0" + hashed_text(helper_path.read_bytes()))
    return "sha256:" + digest.hexdigest()


def _private_imports(name: str, source: bytes) -> list[str]:
    package = name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:
                mod = f"{package}.{mod}" if mod else package
            if mod == package:
                found.update(a.name for a in node.names if a.name.startswith("_"))
            elif mod.startswith(f"{package}._"):
                found.add(mod.removeprefix(f"{package}.").split(".")[0])
    return sorted(found)


def load_runbook(module: ModuleType) -> Runbook:
    name = module.__name__
    rid = getattr(module, "ID", None)
    if not isinstance(rid, str) or not RUNBOOK_ID.fullmatch(rid):
        raise RunbookDefinitionError(f"{name}: ID must look like `flannel.restart-pods`")
    try:
        version = Version.parse(getattr(module, "VERSION", ""))
    except ValueError as exc:
        raise RunbookDefinitionError(f"{name}: {exc}") from None
    if not (module.__doc__ or "").strip():
        raise RunbookDefinitionError(f"{name}: the module docstring is the runbook's help")
    params = getattr(module, "Params", None)
    if not isinstance(params, type):
        raise RunbookDefinitionError(f"{name}: needs a frozen dataclass `Params`")
    try:
        check_params_class(params)
    except TypeError as exc:
        raise RunbookDefinitionError(f"{name}: {exc}") from None
    steps = sorted((v for v in vars(module).values() if isinstance(v, Step)), key=lambda s: s.order)
    if not steps:
        raise RunbookDefinitionError(f"{name}: declares no @step")
    for s in steps:
        if s.risk is not Risk.READ and s.check is None:
            raise RunbookDefinitionError(
                f"{name}: step `{s.name}` is {s.risk.value} and needs a check= that proves "
                "its effect"
            )
    approvals = getattr(module, "APPROVALS", None)
    verifies = getattr(module, "VERIFIES", ())
    if not isinstance(verifies, tuple) or not all(isinstance(v, str) for v in verifies):
        raise RunbookDefinitionError(f"{name}: VERIFIES must be a tuple of finding ids")
    timeout = getattr(module, "VERIFY_TIMEOUT", 120.0)
    return Runbook(
        id=rid,
        version=version,
        help=module.__doc__ or "",
        params=params,
        steps=tuple(steps),
        code_hash=code_hash(module),
        module=name,
        approvals=approvals if isinstance(approvals, int) else None,
        verifies=verifies,
        verify_timeout=float(timeout),
    )


@dataclass(frozen=True)
class LockProblem:
    ref: str
    problem: str


class Registry:
    """All runbook versions, by id; the newest version is the default."""

    def __init__(self, runbooks: Iterable[Runbook]) -> None:
        self._by_id: dict[str, dict[Version, Runbook]] = {}
        for rb in runbooks:
            versions = self._by_id.setdefault(rb.id, {})
            if rb.version in versions:
                raise RunbookDefinitionError(f"{rb.ref} is declared twice")
            versions[rb.version] = rb

    @classmethod
    def from_package(cls, package: str = RUNBOOKS_PACKAGE) -> Registry:
        pkg = importlib.import_module(package)
        modules = [
            importlib.import_module(f"{package}.{info.name}")
            for info in pkgutil.iter_modules(pkg.__path__)
            if not info.name.startswith("_")
        ]
        return cls(load_runbook(m) for m in modules)

    def all(self) -> list[Runbook]:
        return [
            rb
            for rid in sorted(self._by_id)
            for _, rb in sorted(self._by_id[rid].items(), reverse=True)
        ]

    def newest(self) -> list[Runbook]:
        return [self.get(rid) for rid in sorted(self._by_id)]

    def get(self, ref: str) -> Runbook:
        rid, _, wanted = ref.partition("@")
        versions = self._by_id.get(rid)
        if not versions:
            known = ", ".join(sorted(self._by_id)) or "none"
            raise UnknownRunbook(f"there is no runbook `{rid}`; known runbooks: {known}")
        if not wanted:
            return versions[max(versions)]
        try:
            version = Version.parse(wanted)
        except ValueError:
            raise UnknownRunbook(f"`{wanted}` is not a version like 1.2.3") from None
        if version not in versions:
            have = ", ".join(str(v) for v in sorted(versions, reverse=True))
            raise UnknownRunbook(f"{rid} has no version {wanted}; available: {have}")
        return versions[version]

    # -- lock file ------------------------------------------------------------------------------

    def lock_problems(self, lock: dict[str, str]) -> list[LockProblem]:
        problems = []
        for rb in self.all():
            recorded = lock.get(rb.ref)
            if recorded is None:
                problems.append(
                    LockProblem(
                        rb.ref,
                        "is not in the lock file: run `flannel-bot runbooks lock` to record it",
                    )
                )
            elif recorded != rb.code_hash:
                problems.append(
                    LockProblem(
                        rb.ref,
                        "changed since it was locked: put the change "
                        "in a new version instead (copy the module, bump VERSION)",
                    )
                )
        return problems

    def updated_lock(self, lock: dict[str, str]) -> dict[str, str]:
        """Add new versions to the lock; refuse to rewrite the hash of a version already locked."""
        changed = [p for p in self.lock_problems(lock) if "changed" in p.problem]
        if changed:
            raise RunbookLockMismatch("; ".join(f"{p.ref} {p.problem}" for p in changed))
        return {**lock, **{rb.ref: rb.code_hash for rb in self.all()}}


def read_lock(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise RunbookLockMismatch(f"{path} is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def write_lock(path: Path, lock: dict[str, str]) -> None:
    path.write_text(json.dumps(dict(sorted(lock.items())), indent=2) + "\n")


def lock_path(package: str = RUNBOOKS_PACKAGE) -> Path:
    pkg = importlib.import_module(package)
    return Path(next(iter(pkg.__path__))) / LOCK_FILE
