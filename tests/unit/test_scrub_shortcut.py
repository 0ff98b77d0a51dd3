"""`scrub` returns a container whose JSON text shows nothing to redact without walking it
(`redaction._plainly_clean`): the shortcut must give exactly what the walk gives, for every
secret and look-alike of the corpus wherever it sits, and for any JSON-like value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flannel_bot.redaction import (
    _HINTED,
    _HINTS,
    _JSON_HINTS,
    MASK,
    _any_of,
    _plainly_clean,
    _scrub,
    redact,
    scrub,
)
from tests.secret_corpus import BOOTSTRAP, LOOK_ALIKES, SECRETS

_HINT_WORDS = [h.encode() for h in (*_HINTS, *_JSON_HINTS)]


def walked(value: Any) -> Any:
    """What `scrub` gave before the shortcut: every string and key visited."""
    return _scrub(value, redact)


def placements(text: str) -> list[Any]:
    return [
        {"stdout": text},
        {"argv": ["sh", "-c", text]},
        [text],
        {"nested": [{"deeper": (text, 1, None)}]},
        {text[:40]: "value-1234567"},
        {"env": [{"name": text[:30], "value": "s3cr3t-v4lue"}]},
        ("--flag", text),
    ]


@pytest.mark.parametrize("text", [s.text for s in SECRETS] + [a.text for a in LOOK_ALIKES])
def test_the_shortcut_gives_what_the_walk_gives_on_the_corpus(text: str) -> None:
    for value in placements(text):
        assert scrub(value) == walked(value)


@pytest.mark.parametrize("secret", SECRETS, ids=lambda s: f"{s.kind}:{s.text[:40]}")
def test_no_secret_of_the_corpus_is_shown_clean(secret: Any) -> None:
    for value in placements(secret.text)[:4]:  # those that hold the whole text
        assert not _plainly_clean(value)


def test_a_key_name_that_lowercases_to_a_secret_one_is_still_masked() -> None:
    # U+212A KELVIN SIGN lowercases to "k": "to\u212aen" reads as "token" to the key rule
    value = {"to\u212aen": "abcdefgh12345678"}
    assert walked(value) == {"to\u212aen": MASK}
    assert scrub(value) == {"to\u212aen": MASK}


def test_a_bootstrap_token_with_no_hint_is_still_masked() -> None:
    value = {"out": f"joined with {BOOTSTRAP}"}
    assert scrub(value)["out"] != value["out"]


def test_an_ordinary_audit_event_is_shown_clean_and_returned_as_is() -> None:
    event = {
        "type": "event",
        "id": 41,
        "ts": "2026-11-21T10:59:43.491078Z",
        "kind": "step_finished",
        "run_id": 7,
        "actor": "U012AB3CD",
        "source": {"adapter": "slack", "channel": "C0123", "thread_ts": "1700000000.000100"},
        "data": {"step": "check", "node": "node-3", "ok": True, "stdout": "10.244.3.0/24 dev cni0"},
        "hash": "9f" * 32,
    }
    assert _plainly_clean(event)
    assert scrub(event) is event


def test_values_json_cannot_write_are_walked() -> None:
    value: dict[Any, Any] = {("a", "b"): "token=abcdef1234567", "x": [object()]}
    assert not _plainly_clean(value)
    assert scrub(value) == walked(value)


FRAGMENTS = st.sampled_from(
    [
        "token",
        "Token=",
        "pass",
        "key",
        "-u ",
        "://",
        "auth",
        "\u212a",
        "\u0130",
        BOOTSTRAP,
        "private key",
        "eyJ",
        "\\n",
        '"',
        "--",
        "=",
        ": ",
        "abcdef.",
        "0123456789abcdef",
    ]
    + [s.text[:60] for s in SECRETS[::7]]
)
TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=12)), max_size=6).map("".join)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(TEXT, inner, max_size=4),
        st.fixed_dictionaries({"name": TEXT, "value": TEXT}),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(JSONISH)
def test_the_shortcut_gives_what_the_walk_gives_on_any_value(value: Any) -> None:
    assert scrub(value) == walked(value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=5), min_size=1, max_size=12),
    st.lists(st.one_of(st.binary(max_size=8), st.sampled_from([b"key", b"-u"])), max_size=8),
)
def test_the_hint_trie_finds_what_a_search_for_each_word_finds(
    words: list[bytes], parts: list[bytes]
) -> None:
    text = b"".join(parts + words[:1])[::-1] + b"".join(parts)
    assert bool(_any_of(words).search(text)) == any(w in text for w in words)
    assert bool(_HINTED.search(text)) == any(w in text for w in _HINT_WORDS)
