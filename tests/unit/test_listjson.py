"""The bounded list decoder against `json` itself: any JSON value's depth is measured exactly
(brackets, quotes and backslashes inside strings included), and a list's items come out as
`json.loads` gives them, cut at the limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flannel_bot.executors.bundle.listjson import Listed, decode_items, nesting

TRICKY = st.text(alphabet='[]{}"\\/ azé\n\t\x00\u2028', max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@given(VALUES, st.booleans(), st.booleans())
def test_nesting_is_the_depth_of_any_json(value: Any, indent: bool, ascii_only: bool) -> None:
    text = json.dumps(value, indent=2 if indent else None, ensure_ascii=ascii_only)
    assert nesting(text.encode()) == depth(value)


@given(st.lists(VALUES, max_size=8), st.integers(min_value=0, max_value=10), TRICKY)
def test_items_are_what_json_gives_up_to_the_limit(items: list[Any], limit: int, kind: str) -> None:
    text = json.dumps({"kind": kind, "metadata": {"x": [1, {}]}, "items": items, "z": kind})
    assert decode_items(text, limit) == Listed(items[:limit], len(items) <= limit)


@pytest.mark.parametrize(
    "text",
    ['{"items": [1, 2', '{"items": [1 2]}', '{"items": [1],}', '{"items": []} []', "", "{"],
)
def test_text_that_is_not_json_is_a_decode_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        decode_items(text, 10)


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"items": {"a": 1}}', '"items"', "3"])
def test_json_that_is_not_a_list_object_is_none(text: str) -> None:
    assert decode_items(text, 10) is None


def test_the_tick_is_called_while_items_are_decoded() -> None:
    ticks: list[int] = []
    decode_items(json.dumps({"items": list(range(2_500))}), 10_000, lambda: ticks.append(1))
    assert len(ticks) == 2
