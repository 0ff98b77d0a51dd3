"""Redaction on the corpus of realistic secrets and look-alikes (tests/secret_corpus.py), through
the audit store's scrub, and the properties every exit relies on: redacting twice changes
nothing, JSON text stays JSON, and structured data is masked by key name too."""

from __future__ import annotations

import json

import pytest

from flannel_bot.redaction import MASK, redact, scrub
from flannel_bot.settings import REPO_ROOT
from flannel_bot.store.redact import scrub as store_scrub
from tests.secret_corpus import LOOK_ALIKES, SECRETS, LookAlike, Secret


def leaked(secret: Secret, text: str) -> list[str]:
    return [fragment for fragment in secret.leaks if fragment in text]


def figures() -> tuple[int, int]:
    """(secrets caught, look-alikes changed) through the audit store's scrub."""
    caught = sum(not leaked(s, store_scrub({"out": s.text})["out"]) for s in SECRETS)
    changed = sum(store_scrub({"out": a.text})["out"] != a.text for a in LOOK_ALIKES)
    return caught, changed


@pytest.mark.parametrize("secret", SECRETS, ids=lambda s: f"{s.kind}:{s.text[:40]}")
def test_the_store_keeps_no_secret_of_the_corpus(secret: Secret) -> None:
    stored = store_scrub({"stdout": secret.text, "argv": ["sh", "-c", secret.text]})
    assert not leaked(secret, json.dumps(stored)), stored


@pytest.mark.parametrize("alike", LOOK_ALIKES, ids=lambda a: f"{a.kind}:{a.text[:40]}")
def test_the_store_keeps_every_look_alike_as_it_was(alike: LookAlike) -> None:
    assert store_scrub({"stdout": alike.text}) == {"stdout": alike.text}


def test_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    caught, changed = figures()
    with capsys.disabled():
        print(
            f"\nredaction: caught {caught} of {len(SECRETS)} secrets, "
            f"{changed} false positives of {len(LOOK_ALIKES)} look-alikes"
        )
    assert (caught, changed) == (len(SECRETS), 0)


def test_no_file_of_the_real_incidents_changes() -> None:
    """tests/incidents holds what ~150 real flannel issue threads showed (pods, events, node
    lists, flanneld and kubelet logs, probe outputs): look-alikes nobody wrote to pass."""
    files = [p for p in sorted((REPO_ROOT / "tests" / "incidents").rglob("*")) if p.is_file()]
    assert len(files) > 1000
    changed = [p for p in files if redact(text := p.read_text()) != text]
    assert changed == []


@pytest.mark.parametrize("item", SECRETS + LOOK_ALIKES, ids=lambda i: f"{i.kind}:{i.text[:30]}")
def test_redacting_twice_changes_nothing(item: Secret | LookAlike) -> None:
    once = redact(item.text)
    assert redact(once) == once


@pytest.mark.parametrize("item", SECRETS + LOOK_ALIKES, ids=lambda i: f"{i.kind}:{i.text[:30]}")
def test_json_text_stays_json(item: Secret | LookAlike) -> None:
    """Exits that can only see text (a JSON log line, an uploaded JSON Lines report, a Slack
    button value) redact it whole: it must still parse, with no secret in what it holds."""
    variants = (f'x "{item.text}" y', item.text + "\\", f"Authorization: {item.text}")
    for text in (item.text, f"a line before\n{item.text}", *variants):
        once = json.dumps({"m": text})
        twice = json.dumps({"m": once})
        inner = json.loads(json.loads(redact(twice))["m"])  # nested JSON still parses
        if isinstance(item, Secret):
            assert not leaked(item, json.loads(redact(once))["m"])
        else:
            assert json.loads(redact(once))["m"] == redact(text)
            assert inner["m"] == redact(text)


def test_scrub_masks_values_by_their_key_and_keeps_the_rest() -> None:
    pod = {
        "env": [
            {"name": "DB_PASSWORD", "value": "hunter2"},
            {"name": "FLANNEL_IFACE", "value": "eth1"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}},
        ],
        "args": ["--token", "s3cr3t-value", "--iface", "eth1", "--password=hunter2"],
        "auth": "dXNlcjpwYXNz",
        "client_secret": "abc",
        "automountServiceAccountToken": False,
        "secretName": "flannel-token-x7k2p",
        "password": "",
    }
    clean = scrub(pod)
    assert clean["env"][0] == {"name": "DB_PASSWORD", "value": MASK}
    assert clean["env"][1:] == pod["env"][1:]
    assert clean["args"] == ["--token", MASK, "--iface", "eth1", "--password=[REDACTED]"]
    assert clean["auth"] == MASK and clean["client_secret"] == MASK
    assert clean["automountServiceAccountToken"] is False
    assert clean["secretName"] == "flannel-token-x7k2p" and clean["password"] == ""


def test_scrub_copies_nothing_that_holds_no_secret() -> None:
    """A report of a million events is scrubbed before rendering: what is clean is not copied."""
    data = {"runs": [{"steps": [{"output": "FLANNEL_MTU=1450"}]}], "n": 3, "nodes": ("w1", "w2")}
    assert scrub(data) is data
    dirty = {"runs": data["runs"], "other": {"log": "token=abc123456"}}
    clean = scrub(dirty)
    assert clean["runs"] is data["runs"] and clean["other"] == {"log": "token=[REDACTED]"}


def every_hinted_rule(text: str) -> str:
    """`redact` as it was before "pass" was told from bypass: each rule whose hints the
    lowered text holds."""
    from flannel_bot.redaction import _HINTS, _RULES, _UNHINTED

    lowered = text.lower()
    present = {hint for hint in _HINTS if hint in lowered}
    for rule in _RULES if present else _UNHINTED:
        if not rule.hints or not present.isdisjoint(rule.hints):
            text = rule.pattern.sub(rule.replace, text)
    return text


BYPASS = [
    "bridged pod traffic bypasses iptables; ",
    "passed: ",
    "compass=",
    "PASSED --",
    "passwor\u0131d: ",
    "passphra\u017fe=",  # U+017F matches s where case is ignored: redacted, hint kept
]


@pytest.mark.parametrize("item", SECRETS + LOOK_ALIKES, ids=lambda i: f"{i.kind}:{i.text[:30]}")
@pytest.mark.parametrize("said", BYPASS)
def test_a_text_saying_bypass_is_redacted_as_every_rule_hinted_redacts_it(
    item: Secret | LookAlike, said: str
) -> None:
    for text in (said + item.text, item.text + "\n" + said + "x1234567", said + "x1234567"):
        assert redact(text) == every_hinted_rule(text), text
