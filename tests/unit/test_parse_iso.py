"""`parse_iso` reads `iso`'s own shape by a faster path: it must accept and refuse exactly what
`strptime` with `iso`'s format does, and give the same moment."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from flannel_bot.ports.clock import iso, parse_iso

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# `iso` writes years before 1000 with fewer digits (strftime's %Y), which neither path reads
MOMENTS = st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC))


def by_strptime(text: str) -> datetime | str:
    try:
        return datetime.strptime(text, FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return "refused"


def by_parse_iso(text: str) -> datetime | str:
    try:
        return parse_iso(text)
    except ValueError:
        return "refused"


@given(MOMENTS)
def test_what_iso_writes_reads_back(moment: datetime) -> None:
    assert parse_iso(iso(moment)) == moment


# iso's shape with any character anywhere changed: digits, signs, separators, letters, unicode
CHARS = st.sampled_from(list("0123456789-T:.Z +,xa\u0661\uff10"))


@settings(max_examples=1000)
@given(MOMENTS, st.lists(st.tuples(st.integers(0, 26), CHARS)))
def test_any_text_near_that_shape_is_read_as_strptime_reads_it(
    moment: datetime, edits: list[tuple[int, str]]
) -> None:
    text = list(iso(moment))
    for at, char in edits:
        text[at] = char
    written = "".join(text)
    assert by_parse_iso(written) == by_strptime(written)


def test_other_lengths_and_shapes() -> None:
    for text in ["2026-11-21T10:59:43.49107Z", "2026-11-21T10:59:43Z", "", "2026-11-21"]:
        assert by_parse_iso(text) == by_strptime(text)
