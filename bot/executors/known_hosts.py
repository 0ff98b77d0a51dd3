"""known_hosts as the SSH executor reads it: plain and hashed entries, `@revoked` keys refused,
`@cert-authority` lines skipped.

paramiko's own reader gives up on the whole file at the first marker line (it takes the marker for
a host name and the host pattern for a key type), and would ignore `@revoked` if it did not. A key
marked `@revoked` must never be accepted for a host its patterns match, whatever other line lists
it. paramiko cannot check host certificates, so a `@cert-authority` line is skipped with a warning:
such nodes need their own keys listed under their names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

log = logging.getLogger(__name__)

CERT_AUTHORITY = "@cert-authority"
REVOKED = "@revoked"


@dataclass(frozen=True)
class RevokedKey:
    patterns: tuple[str, ...]
    key: paramiko.PKey
    line: int


@dataclass(frozen=True)
class KnownHosts:
    """The usable entries of one known_hosts file, and the keys it revokes."""

    path: Path
    keys: paramiko.HostKeys
    revoked: tuple[RevokedKey, ...] = ()

    def lookup(self, name: str) -> dict[str, paramiko.PKey]:
        """Key type -> key listed under exactly `name` (plain or hashed); empty when none."""
        found = self.keys.lookup(name)
        return dict(found) if found else {}

    def revoked_line(self, key: paramiko.PKey, names: Iterable[str]) -> int | None:
        """The line of a `@revoked` entry for `key` whose patterns match one of `names`."""
        for entry in self.revoked:
            if entry.key.asbytes() == key.asbytes() and any(
                patterns_match(entry.patterns, n) for n in names
            ):
                return entry.line
        return None


def read_known_hosts(path: Path) -> KnownHosts:
    """Parse `path`; a line that cannot be used is logged and skipped, never fatal.

    Raises OSError when the file cannot be read."""
    keys = paramiko.HostKeys()
    revoked: list[RevokedKey] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
            if marker == CERT_AUTHORITY:
                log.warning(
                    "%s:%d: skipped a @cert-authority line: flannel-bot cannot check host "
                    "certificates; list each node's own host key under the node's name",
                    path,
                    number,
                )
                continue
            if marker != REVOKED:
                log.warning("%s:%d: skipped a line with unknown marker %s", path, number, marker)
                continue
        entry = _entry(line, path, number)
        if entry is None:
            if marker == REVOKED:
                log.error(
                    "%s:%d: cannot read this @revoked key, so it cannot be refused; fix the line",
                    path,
                    number,
                )
            continue
        if marker == REVOKED:
            revoked.append(RevokedKey(tuple(entry.hostnames), entry.key, number))
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return KnownHosts(path, keys, tuple(revoked))


def _entry(line: str, path: Path, number: int) -> HostKeyEntry | None:
    try:
        entry = HostKeyEntry.from_line(line, number)
    except (InvalidHostKey, paramiko.SSHException, ValueError) as exc:
        log.warning("%s:%d: skipped a line whose key cannot be read: %s", path, number, exc)
        return None
    if entry is None or entry.key is None:
        log.warning("%s:%d: skipped a line: too few fields or unknown key type", path, number)
        return None
    return entry


def patterns_match(patterns: Sequence[str], name: str) -> bool:
    """OpenSSH's host pattern lists: `*` and `?` wildcards, `!` negation, hashed `|1|` names,
    case-insensitive (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT)."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if body.startswith("|1|"):
            hit = paramiko.HostKeys.hash_host(name, body) == body
        else:
            wildcard = re.escape(body.lower()).replace(r"\*", ".*").replace(r"\?", ".")
            hit = re.fullmatch(wildcard, name.lower()) is not None
        if hit and negated:
            return False
        matched = matched or hit
    return matched
