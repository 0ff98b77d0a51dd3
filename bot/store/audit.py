"""The audit log's hash chain: how an event is hashed, and how the whole chain is verified.

Each event stores the SHA-256 of the previous event; `chain_head` records the last id and hash, so
removing or adding events at the end is caught as well as edits in the middle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps uses
from typing import Any

from flannel_bot.ports.store import ChainReport

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


# What `walk` reads of each event, FACTS (for `watch`) in the middle. `data` and `source`, most of
# the bytes, come as bytes and are escaped with bytes.replace: only `"` and `\\` are, which is all
# `canonical_json` escapes in the ASCII JSON text the store writes. A value it would write
# differently (a non-ASCII character, a control character, a number or blob where text belongs)
# leaves a byte no true hash input holds, so its hash can only mismatch, and that event is
# checked the exact way (`event_hash`). A match here is therefore a match of the definition.
WALKED = (
    "id, kind, prev_hash, hash, run_id, actor, {facts} AS facts, "
    "typeof(data) = 'text' AND typeof(source) = 'text', ts, "
    "CAST(data AS BLOB), CAST(source AS BLOB)"
)
Walked = tuple[Any, ...]


def walk(
    batches: Iterable[Sequence[Walked]],
    expected_id: int,
    prev_hash: str,
    exact: Callable[[int, str], bool],
    special: frozenset[str],
    seen: Callable[[Walked], None],
) -> tuple[int, str, int | None]:
    """The chain walked fast over rows of WALKED, in id order from `expected_id`, linked from
    `prev_hash`: (events checked, the last one's hash, the first event that does not check out,
    or None). `exact(id, prev_hash)` re-checks an event whose fast hash input may differ from
    the definition's; `seen` gets each event of a `special` kind once checked. It names no
    problem: on one, `verify_rows` walks again and says what was done."""
    count, sha, join, quote = 0, hashlib.sha256, b"".join, _quote
    for batch in batches:  # the hot loop: a million events, so nothing per row that can wait
        for row in batch:
            rid, kind, prev, digest, run, actor, _, texts, ts, data, source = row
            if rid != expected_id or prev != prev_hash:
                return count, prev_hash, rid
            try:
                who = "null" if actor is None else quote(actor)
                body = join(
                    (
                        f'{prev}\n{{"actor":{who},"data":"'.encode(),
                        data.replace(b"\\", b"\\\\").replace(b'"', b'\\"'),
                        f'","id":{rid},"kind":{quote(kind)},"run_id":'
                        f'{"null" if run is None else run},"source":"'.encode(),
                        source.replace(b"\\", b"\\\\").replace(b'"', b'\\"'),
                        f'","ts":{quote(ts)}}}'.encode(),
                    )
                )
            except (TypeError, AttributeError):  # not the shapes the store writes
                body = b""
            if not (texts and sha(body).hexdigest() == digest) and not exact(rid, prev):
                return count, prev_hash, rid
            prev_hash, expected_id, count = digest, rid + 1, count + 1
            if kind in special:
                seen(row)
    return count, prev_hash, None


def walked(facts: str) -> str:
    """The columns `walk` reads, with `facts` (SQL) as the one `watch` reads."""
    return WALKED.format(facts=facts)


def verify_rows(
    rows: Iterable[Mapping[str, Any]],
    head: Mapping[str, Any] | None,
    checkpoint: Mapping[str, Any] | None = None,
    watch: Callable[[Mapping[str, Any]], None] | None = None,
    watched: frozenset[str] = frozenset(),
) -> ChainReport:
    """Walk the chain in id order; report the first event that was altered, inserted or deleted.

    `checkpoint` is the newest prune's: the chain continues from the last pruned event's id and
    hash. It counts only if a kept `audit_pruned` event records it (a prune writes one in the
    same transaction), so a checkpoint added beside the chain cannot excuse deleted events.
    `watch` sees each event of a `watched` kind once its link and hash were checked, in order."""
    start: tuple[int, str] | None = None
    if checkpoint:
        start = int(checkpoint["pruned_through"]), str(checkpoint["last_hash"])
    prev_hash, expected_id = (start[1], start[0] + 1) if start else (GENESIS, 1)
    iterator = iter(rows)
    row = next(iterator, None)
    if row is not None and head is None:
        return ChainReport(
            False,
            0,
            "",
            None,
            "the chain_head row is missing (deleted), so events removed from the end of the log "
            "cannot be told from its real end; compare with the last head posted to Slack",
        )
    head_id = head["last_event_id"] if head else 0
    first = (row["id"], row["hash"]) if row is not None else None
    special = watched | {"audit_pruned"}
    count, vouched_by = 0, None
    while row is not None:  # the hot loop: a million events is seconds, so nothing extra here
        following = next(iterator, None)
        problem = _check(row, following, prev_hash, expected_id, head_id)
        if problem:
            return ChainReport(False, count, prev_hash, problem[0], problem[1])
        prev_hash, expected_id, count = row["hash"], row["id"] + 1, count + 1
        kind = row["kind"]
        if kind in special:
            if kind == "audit_pruned" and checkpoint and vouches(row["data"], checkpoint):
                vouched_by = row["id"]
            if watch is not None and kind in watched:
                watch(row)
        row = following
    problem = at_the_end(head, prev_hash, expected_id)
    if problem is None and start and vouched_by is None:
        problem = (
            start[0] + 1,
            f"deleted: events up to {start[0]} are gone under a checkpoint that no "
            "audit_pruned event in the chain vouches for (a prune records one; this "
            "checkpoint was added beside the chain)",
        )
    if problem:
        return ChainReport(False, count, prev_hash, problem[0], problem[1])
    return ChainReport(
        True,
        count,
        prev_hash,
        head_id=head_id,
        first_id=first[0] if first else None,
        first_hash=first[1] if first else "",
        pruned_through=start[0] if start else 0,
        vouched_by=vouched_by,
    )


def at_the_end(
    head: Mapping[str, Any] | None, last_hash: str, expected_id: int
) -> tuple[int, str] | None:
    """Whether the log ends where the chain head says it does."""
    head_id = head["last_event_id"] if head else 0
    head_hash = head["last_hash"] if head else GENESIS
    if head_id > expected_id - 1:
        return expected_id, (
            f"deleted: the chain head records {head_id} events, the log ends at "
            f"event {expected_id - 1}"
        )
    if head_id == expected_id - 1 and head_hash != last_hash:
        return head_id, "altered and re-hashed: the chain head recorded a different hash for it"
    if head_id < expected_id - 1 or head_hash != last_hash:
        return head_id + 1, (
            f"inserted: event {head_id + 1} comes after the recorded chain head (event {head_id})"
        )
    return None


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
