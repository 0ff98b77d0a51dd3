"""The audit log's hash chain: how an event is hashed, and how the whole chain is verified.

Each event stores the SHA-256 of the previous event; `chain_head` records the last id and hash, so
removing or adding events at the end is caught as well as edits in the middle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps uses
from typing import Any

from bot.ports.store import ChainReport

GENESIS = "0" * 64


HASHED = ("id", "ts", "kind", "run_id", "actor", "source", "data")


def canonical_json(row: Mapping[str, Any]) -> str:
    """The hashed fields as sorted, compact JSON: the definition of an event's hash input."""
    return json.dumps({k: row[k] for k in HASHED}, sort_keys=True, separators=(",", ":"))


def _canonical_fast(row: Mapping[str, Any]) -> str | None:
    """`canonical_json` built by hand for rows as SQLite returns them (2-3x faster, which is
    most of verifying a long chain); None for any other shape, which takes the slow path."""
    rid, run, actor = row["id"], row["run_id"], row["actor"]
    ts, kind, source, data = row["ts"], row["kind"], row["source"], row["data"]
    if type(rid) is not int or not (run is None or type(run) is int):
        return None
    if not (actor is None or type(actor) is str):
        return None
    if not (type(ts) is str and type(kind) is str and type(source) is str and type(data) is str):
        return None
    return (
        '{"actor":' + ("null" if actor is None else _quote(actor))
        + ',"data":' + _quote(data)
        + ',"id":' + int.__repr__(rid)
        + ',"kind":' + _quote(kind)
        + ',"run_id":' + ("null" if run is None else int.__repr__(run))
        + ',"source":' + _quote(source)
        + ',"ts":' + _quote(ts)
        + "}"
    )  # fmt: skip


def event_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    canonical = _canonical_fast(row) or canonical_json(row)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def verify_rows(
    rows: Iterable[Mapping[str, Any]],
    head: Mapping[str, Any] | None,
    checkpoint: Mapping[str, Any] | None = None,
    watch: Callable[[Mapping[str, Any]], None] | None = None,
) -> ChainReport:
    """Walk the chain in id order; report the first event that was altered, inserted or deleted.

    `checkpoint` is the newest prune's: the chain continues from the last pruned event's id and
    hash. It counts only if a kept `audit_pruned` event records it (a prune writes one in the
    same transaction), so a checkpoint added beside the chain cannot excuse deleted events.
    `watch` sees every event whose link and hash were checked, in order."""
    start: tuple[int, str] | None = None
    if checkpoint:
        start = int(checkpoint["pruned_through"]), str(checkpoint["last_hash"])
    prev_hash, expected_id = (start[1], start[0] + 1) if start else (GENESIS, 1)
    walk = _Walk(checkpoint, watch)
    iterator = iter(rows)
    first = next(iterator, None)
    if first is not None and head is None:
        return ChainReport(
            False,
            0,
            "",
            None,
            "the chain_head row is missing (deleted), so events removed from the end of the log "
            "cannot be told from its real end; compare with the last head posted to Slack",
        )
    head_id = head["last_event_id"] if head else 0
    pending: list[Mapping[str, Any]] = [] if first is None else [first]
    for row in iterator:
        pending.append(row)
        problem = _check(pending[0], pending[1], prev_hash, expected_id, head_id)
        if problem:
            return walk.broken(prev_hash, problem)
        prev_hash, expected_id = walk.accept(pending.pop(0))
    if pending:
        problem = _check(pending[0], None, prev_hash, expected_id, head_id)
        if problem:
            return walk.broken(prev_hash, problem)
        prev_hash, expected_id = walk.accept(pending[0])
    head_hash = head["last_hash"] if head else GENESIS
    if head_id > expected_id - 1:
        return walk.broken(
            prev_hash,
            (
                expected_id,
                f"deleted: the chain head records {head_id} events, the log ends at "
                f"event {expected_id - 1}",
            ),
        )
    if head_id == expected_id - 1 and head_hash != prev_hash:
        return walk.broken(
            prev_hash,
            (head_id, "altered and re-hashed: the chain head recorded a different hash for it"),
        )
    if head_id < expected_id - 1 or head_hash != prev_hash:
        return walk.broken(
            prev_hash,
            (
                head_id + 1,
                f"inserted: event {head_id + 1} comes after the recorded chain head "
                f"(event {head_id})",
            ),
        )
    if start and walk.vouched_by is None:
        return walk.broken(
            prev_hash,
            (
                start[0] + 1,
                f"deleted: events up to {start[0]} are gone under a checkpoint that no "
                "audit_pruned event in the chain vouches for (a prune records one; this "
                "checkpoint was added beside the chain)",
            ),
        )
    return walk.report(prev_hash, head_id)


class _Walk:
    """What the walk has accepted so far: the count, where the kept log starts, and the
    `audit_pruned` event that vouches for the checkpoint."""

    def __init__(
        self,
        checkpoint: Mapping[str, Any] | None,
        watch: Callable[[Mapping[str, Any]], None] | None,
    ) -> None:
        self.checkpoint = checkpoint
        self.watch = watch
        self.count = 0
        self.first: tuple[int, str] | None = None
        self.vouched_by: int | None = None

    def accept(self, row: Mapping[str, Any]) -> tuple[str, int]:
        """Count a checked event; the hash and id the next one must link to."""
        if self.first is None:
            self.first = (row["id"], row["hash"])
        if (
            self.vouched_by is None
            and self.checkpoint
            and row["kind"] == "audit_pruned"
            and vouches(row["data"], self.checkpoint)
        ):
            self.vouched_by = row["id"]
        if self.watch is not None:
            self.watch(row)
        self.count += 1
        return row["hash"], row["id"] + 1

    def broken(self, prev_hash: str, problem: tuple[int, str]) -> ChainReport:
        return ChainReport(False, self.count, prev_hash, problem[0], problem[1])

    def report(self, head_hash: str, head_id: int) -> ChainReport:
        first_id, first_hash = self.first if self.first else (None, "")
        return ChainReport(
            True,
            self.count,
            head_hash,
            head_id=head_id,
            first_id=first_id,
            first_hash=first_hash,
            pruned_through=int(self.checkpoint["pruned_through"]) if self.checkpoint else 0,
            vouched_by=self.vouched_by,
        )


def vouches(data: str, checkpoint: Mapping[str, Any]) -> bool:
    """Whether an `audit_pruned` event's data records this checkpoint."""
    try:
        said = json.loads(data)
    except ValueError:
        return False
    return isinstance(said, dict) and all(
        said.get(key) == checkpoint[key] for key in ("pruned_through", "last_hash", "events")
    )


def _check(
    row: Mapping[str, Any],
    following: Mapping[str, Any] | None,
    prev_hash: str,
    expected_id: int,
    head_id: int,
) -> tuple[int, str] | None:
    rid = row["id"]
    if rid > head_id:
        return rid, f"inserted: it comes after the recorded chain head (event {head_id})"
    if rid > expected_id:
        span = (
            f"event {expected_id}"
            if rid == expected_id + 1
            else (f"events {expected_id}-{rid - 1}")
        )
        return expected_id, f"deleted: {span} missing before event {rid}"
    if rid < expected_id:
        return rid, "inserted: its id is out of sequence"
    if row["prev_hash"] != prev_hash:
        if following is not None and following["prev_hash"] == prev_hash:
            return rid, "inserted: the next event links past it to the one before"
        return rid, "altered or inserted: it does not link to the event before it"
    if event_hash(prev_hash, row) != row["hash"]:
        return rid, "altered: its content does not match its recorded hash"
    if (
        following is not None
        and following["id"] == rid + 1
        and following["prev_hash"] != row["hash"]
        and event_hash(following["prev_hash"], following) == following["hash"]
    ):  # the next event is intact and remembers another hash for this one
        return rid, f"altered and re-hashed: event {rid + 1} recorded a different hash for it"
    return None
