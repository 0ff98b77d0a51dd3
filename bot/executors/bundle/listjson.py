"""Decoding a Kubernetes list file within bounds: its nesting measured before anything is built,
and its items decoded one at a time up to a count.

Why not `json.loads`: it builds every item before any can be counted (a million pods: 89 s and
3.2 GB), and JSON nested deeper than the interpreter's recursion limit raises RecursionError
from inside it. Here the depth is measured on the raw bytes at C speed (escapes and strings
removed, then a running sum over the brackets), and items are decoded one by one with the
standard decoder, so a list stops at its limit with what was read so far. The decoder forgets
the key strings it made after each call; sharing them across the file's items keeps the items
as small as `json.loads` makes them (without it, 15,000 pods took a third more memory).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_SIGN = bytes.maketrans(b'[{]}"', b"\x01\x01\xff\xff\x00")  # read as signed bytes: +1, -1, 0


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
    text: str, limit: int, tick: Callable[[], None] = lambda: None, every: int = 1000
) -> Listed | None:
    """The `items` of a JSON object, at most `limit` of them; None when the text is JSON but
    not an object with an `items` array. Raises ValueError (json.JSONDecodeError) for text that
    is not JSON, up to where it stopped reading. `tick` is called every `every` items (a
    deadline check may raise from it)."""
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
