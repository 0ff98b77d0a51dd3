"""Decoding a Kubernetes list file within bounds: its nesting measured before anything is built,
and its items decoded one at a time up to a count.

Why not `json.loads`: it builds every item before any can be counted (a million pods: 89 s and
3.2 GB), and JSON nested deeper than the interpreter's recursion limit raises RecursionError
from inside it. Here the depth is measured on the raw bytes at C speed (escapes and strings
removed, then a running sum over the brackets), and items are decoded one by one, so a list
stops at its limit with what was read so far.

Why msgspec: parsing was the largest part of reading a 150,000-pod bundle. msgspec finds the
items of the list at C speed without building them (`msgspec.Raw`, a slice of the text per
item), so each is still decoded one at a time up to the limit, several times faster than the
standard decoder with a Python hook per object; orjson parses about as fast but only a whole
document, which would build every item before any could be counted. JSON msgspec refuses but
the standard decoder reads (NaN, a lone surrogate escape), and every corrupt file, are decoded
again by the standard decoder, item by item as before, so what is read and each error's text
are unchanged. A file given as bytes is decoded from them when it is valid UTF-8 (no decoded
copy of the text); msgspec refuses the rest, which is read as text with bad bytes replaced.

Why `typed`: a caller that wants its own records (pods.json -> PodInfo) passes a msgspec typed
decode of one item, which skips the fields it does not need at C speed; an item it refuses is
decoded as JSON as before, so the caller reads it its usual way.

Why `decode_whole`: finding the items (one pass) and then decoding each (a second pass, a call
per item) cost twice a typed decode of the whole list at once; that decode is all or nothing (a
list with one item of another shape is read item by item as above), and builds nothing deeper
than the caller's types, so its caller need not measure the nesting first (msgspec skips the
rest under the interpreter's recursion check, and fails cleanly past it).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import msgspec

_SPACE = re.compile(r"[ \t\n\r]*")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_SIGN = bytes.maketrans(b'[{]}"', b"\x01\x01\xff\xff\x00")  # read as signed bytes: +1, -1, 0
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])


class _List(msgspec.Struct, gc=False):
    items: list[msgspec.Raw] | None = None


_LIST = msgspec.json.Decoder(_List)  # the items found in one pass; other keys skipped
_RAWS = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()


# (text, limit, tick, every) -> the first `limit` items as the caller's records and how many
# the list holds, `tick` called every `every` records; None when it does not take the text (not
# JSON, not a list, an item of another shape): all or nothing, so the items are then read one by
# one as ever, and what is read does not depend on which reading took it
Whole = Callable[[str | bytes, int, Callable[[], None], int], tuple[list[Any], int] | None]


@dataclass(frozen=True)
class Listed:
    """A list's items, in order; `complete` is False when it holds more than were decoded."""

    items: list[Any]
    complete: bool


def nesting(data: bytes) -> int:
    """How deep the JSON text's arrays and objects nest (0 for a scalar). Brackets inside
    strings do not count; for text that is not JSON the figure is only an estimate."""
    if b"\\" in data:  # an escaped backslash or quote is neither a quote nor an escape
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # adjacent quotes are an empty string or the end of one and the start of the next, with
    # nothing structural in between: either way they can go, and most strings go with them
    marks = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in marks:
        marks = _STRING.sub(b"", marks)
    return max(accumulate(array("b", marks.translate(_SIGN))), default=0)


def decode_items(
    text: str | bytes,
    limit: int,
    tick: Callable[[], None] = lambda: None,
    every: int = 1000,
    typed: Callable[[msgspec.Raw], Any] | None = None,
) -> Listed | None:
    """The `items` of a JSON object, at most `limit` of them; None when the text is JSON but
    not an object with an `items` array. Raises ValueError (json.JSONDecodeError) for text that
    is not JSON, up to where it stopped reading. `tick` is called every `every` items (a
    deadline check may raise from it). Bytes are read as UTF-8, undecodable bytes replaced.

    `typed`: a faster reading of one item's JSON (a msgspec typed decode), returning None for an
    item it does not take; such items, and every item when the file is not read by msgspec, are
    decoded as JSON (dicts, lists, ...), so the caller gets its own type or the JSON value."""
    if isinstance(text, bytes):
        # valid UTF-8 is read without a decoded copy of the text; msgspec refuses the rest, which
        # is read as text with the bad bytes replaced
        try:
            return _fast_items(text, limit, tick, every, typed)
        except msgspec.DecodeError:
            text = text.decode("utf-8", errors="replace")
    try:
        return _fast_items(text, limit, tick, every, typed)
    except msgspec.DecodeError:
        return _stdlib_items(text, limit, tick, every)


def decode_whole(
    text: str | bytes,
    limit: int,
    whole: Whole,
    tick: Callable[[], None] = lambda: None,
    every: int = 1000,
) -> Listed | None:
    """`decode_items` by one typed decode of the whole list (`Whole`), or None when that does
    not take the text: then `decode_items` reads it, and gives the same items."""
    got = whole(text, limit, tick, every)
    if got is None:
        return None
    items, count = got
    return Listed(items, count <= limit)


def _fast_items(
    text: str | bytes,
    limit: int,
    tick: Callable[[], None],
    every: int,
    typed: Callable[[msgspec.Raw], Any] | None,
) -> Listed | None:
    """`decode_items` with msgspec; raises msgspec.DecodeError for what it does not read."""
    try:
        raws = _LIST.decode(text).items
    except msgspec.ValidationError:  # not an object, or `items` is not an array
        raws = _top_items(text)
    if raws is None:
        return None
    items: list[Any] = []
    for value in raws[:limit] if len(raws) > limit else raws:
        item = typed(value) if typed is not None else None
        items.append(_ANY.decode(value) if item is None else item)
        if len(items) % every == 0:
            tick()
    return Listed(items, len(raws) <= limit)


def _top_items(text: str | bytes) -> list[msgspec.Raw] | None:
    try:
        top = _TOP.decode(text)
    except msgspec.ValidationError:  # JSON, but an array or a scalar
        _ANY.decode(text)
        return None
    raw = top.get("items")
    if raw is None:
        return None
    try:
        return _RAWS.decode(raw)
    except msgspec.ValidationError:  # `items` is not an array
        return None


def _stdlib_items(text: str, limit: int, tick: Callable[[], None], every: int) -> Listed | None:
    """`decode_items` with the standard decoder: the key strings it makes are shared across
    the file's items, which keeps them as small as `json.loads` makes them."""
    keys: dict[str, str] = {}

    def shared_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        return {keys.setdefault(key, key): value for key, value in pairs}

    decoder = json.JSONDecoder(object_pairs_hook=shared_keys)
    at = _skip(text, 0)
    if not text.startswith("{", at):
        if not text.startswith("[", at):
            decoder.raw_decode(text, at)  # a scalar, or not JSON at all
        return None
    items: Any = None
    at = _skip(text, at + 1)
    closed = text.startswith("}", at)
    while not closed:
        if not text.startswith('"', at):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, at
            )
        key, at = decoder.raw_decode(text, at)
        at = _skip(text, at)
        if not text.startswith(":", at):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
        at = _skip(text, at + 1)
        if key == "items" and text.startswith("[", at):
            items, at, complete = _array(decoder, text, at, limit, tick, every)
            if not complete:  # the rest is not read: nothing after the items is used
                return Listed(items, False)
        else:
            value, at = decoder.raw_decode(text, at)
            if key == "items":
                items = value
        at = _skip(text, at)
        if text.startswith("}", at):
            closed = True
        elif text.startswith(",", at):
            at = _skip(text, at + 1)
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
    at = _skip(text, at + 1)
    if at != len(text):
        raise json.JSONDecodeError("Extra data", text, at)
    return Listed(items, True) if isinstance(items, list) else None


def _array(
    decoder: json.JSONDecoder,
    text: str,
    at: int,
    limit: int,
    tick: Callable[[], None],
    every: int,
) -> tuple[list[Any], int, bool]:
    """(items, where the array ends, whether it was read to its end) for the array at `at`."""
    items: list[Any] = []
    at = _skip(text, at + 1)
    if text.startswith("]", at):
        return items, at + 1, True
    while True:
        if len(items) == limit:
            return items, at, False
        value, at = decoder.raw_decode(text, at)
        items.append(value)
        if len(items) % every == 0:
            tick()
        at = _skip(text, at)
        if text.startswith("]", at):
            return items, at + 1, True
        if not text.startswith(",", at):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at = _skip(text, at + 1)


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at
