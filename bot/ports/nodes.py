"""Nodes as the wings see them: a command's result, and the Protocols that run argv on a node.

Implemented over SSH (`bot.executors.ssh`) and by recordings (bundles, snapshots); the argv is
always a list, quoted once at the one place that builds a remote command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class CommandResult:
    node: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str = ""
    duration_s: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class ReducedResult(CommandResult):
    """A VXLAN peer table as a support bundle's `peer-tables.json` records it, reduced where it
    was collected: `stdout` holds only the entries that are not wanted ones, `entries` how many
    the table held, `missing` the wanted keys (JSON values) it lacked. Given only to a caller
    that asked for the facts of one wanted set (`BundleReader.run_each(..., facts=...)`)."""

    entries: int = 0
    missing: tuple[Any, ...] = ()


@dataclass(frozen=True)
class DigestResult(CommandResult):
    """A VXLAN peer table as the node side digested it (`ports.peer_digest`): `stdout` holds
    only the entries without a peer's key; `entries` how many the table held, `count` how many
    had a key, `digest` the sum of those keys' hashes. Given only to a caller that asked for
    digests (`run_each(..., digest=...)` of an executor with `digests_tables`)."""

    entries: int = 0
    count: int = 0
    digest: int = 0


def checked_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Refuses a command string where argv words are expected (splitting is the caller's call),
    for every node transport alike."""
    if isinstance(argv, str):
        raise TypeError(f"argv must be a list of words, not the string {argv!r}")
    words = tuple(argv)
    if not words or not all(isinstance(w, str) for w in words):
        raise TypeError(f"argv must be a non-empty sequence of strings, got {argv!r}")
    if any("\0" in w for w in words):
        raise ValueError(f"argv words cannot contain NUL bytes: {argv!r}")
    return words


class NodeExecutor(Protocol):
    """Runs argv on a node (over SSH in production)."""

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult: ...


class FanOutExecutor(NodeExecutor, Protocol):
    """A node executor that runs command lists on many nodes at once within one deadline."""

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> Mapping[str, Sequence[CommandResult] | Exception]: ...
