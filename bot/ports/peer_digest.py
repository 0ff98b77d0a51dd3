"""The key of each VXLAN peer-table entry, and an order-free digest of a table's keys: shared by
the node side (`flannel-bot node --digest`, in a node-exec pod) and diagnose (`peer_tables`).

Why a digest: on a VXLAN cluster each node's route, neighbour and FDB tables list every peer, so
carrying them to the bot moves nodes squared bytes (5,000 nodes: about 3.7 MB a node, 19 GB in
all, through the API server's pod logs). The node prints instead, per table, how many entries it
has, how many have a peer's key, the sum of those keys' 64-bit hashes, and the entries without a
peer's key as they are. The bot knows what every node should hold (the peers' Node annotations,
less the node's own entries) and compares: equal, and the node lacks exactly its own entries;
different, and only that node's table is fetched whole and compared entry by entry. A sum, not a
hash of the sorted keys: it needs no order (neighbour and FDB tables come in hash order), and the
expected sum of a node is the cluster's sum less its own keys, one subtraction per node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

DEVICE = "flannel.1"
MODULUS = 1 << 64


def route_key(entry: Mapping[str, Any]) -> Hashable | None:
    """A route as flanneld adds it for a peer (dev flannel.1; no scope, protocol or type: those
    make it a connected or local route to other rules): its destination. Else None."""
    if str(entry.get("dev") or "") != DEVICE:
        return None
    if entry.get("scope") or entry.get("protocol") or entry.get("type"):
        return None
    return str(entry.get("dst") or "")


def neighbour_key(entry: Mapping[str, Any]) -> Hashable | None:
    return (str(entry.get("dst")), str(entry.get("lladdr", "")).lower())


def fdb_key(entry: Mapping[str, Any]) -> Hashable | None:
    return (str(entry.get("mac", "")).lower(), str(entry.get("dst", "")))


KEYS: dict[str, Callable[[Mapping[str, Any]], Hashable | None]] = {
    "ip-route": route_key,
    "ip-neigh": neighbour_key,
    "fdb": fdb_key,
}


def key_hash(key: Hashable) -> int:
    """A key's 64-bit hash, the same in every process (not Python's salted `hash`)."""
    text = json.dumps(list(key) if isinstance(key, tuple) else key, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class TableDigest:
    """A table as the node side reports it: `entries` in all, `count` of them with a key, the
    sum of their key hashes modulo 2**64, and the entries without a key (`others`, JSON)."""

    entries: int
    count: int
    digest: int
    others: str

    def as_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "count": self.count, "digest": f"{self.digest:016x}"}


def digest_table(probe_id: str, stdout: str) -> TableDigest | None:
    """The digest of an `ip -j`/`bridge -j` table; None for a table id without keys, or output
    that is not a JSON array of objects (the node then sends the table itself)."""
    key = KEYS.get(probe_id)
    if key is None:
        return None
    try:
        entries = json.loads(stdout or "[]")
    except ValueError:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    count = total = 0
    others = []
    for entry in entries:
        found = key(entry)
        if found is None:
            others.append(entry)
        else:
            count += 1
            total = (total + key_hash(found)) % MODULUS
    text = json.dumps(others, separators=(",", ":")) + "\n"
    return TableDigest(len(entries), count, total, text)
