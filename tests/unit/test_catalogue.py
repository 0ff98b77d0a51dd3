"""The message catalogue as data: every entry cites who prints it and from which source file, its
literal example is recognised in every place it says the line can be read, it names a finding a
rule draws, and its pattern stays quiet on a healthy flanneld (issue 14)."""

from __future__ import annotations

import re

import pytest

from flannel_bot.diagnosis.catalogue import CATALOGUE, WHERE, Message
from flannel_bot.diagnosis.catalogue.message import FLANNEL_LOG
from flannel_bot.diagnosis.rules import RULES
from flannel_bot.lab import objects
from tests.unit.test_rules import SPEC

RULE_IDS = frozenset(r.id for r in RULES)
# owner/repo:path[...]: the repository and the file the line is printed from
SOURCE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+:[\w./-]+")
HEALTHY_FLANNELD = [
    line
    for n in SPEC.all_nodes()
    for line in objects.flanneld_log(SPEC, n, f"kube-flannel-ds-{n.name}").splitlines()
    if line.strip()
]


def param_id(messages: tuple[Message, ...]) -> list[str]:
    """finding-N: the N-th message of that finding, in catalogue order."""
    seen: dict[str, int] = {}
    ids = []
    for m in messages:
        ids.append(f"{m.finding}-{seen.get(m.finding, 0)}")
        seen[m.finding] = seen.get(m.finding, 0) + 1
    return ids


MESSAGES = CATALOGUE.messages
IDS = param_id(MESSAGES)


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_example_is_recognised_in_every_place_it_is_read(message: Message) -> None:
    assert message.where, "a message must say where it can be read"
    for where in message.where:
        assert where in WHERE, f"unknown place {where!r}"
        sightings = list(CATALOGUE.scan(where, message.example, "w1", "test"))
        mine = [s for s in sightings if s.message == message]
        assert mine, f"{where}: the example is not recognised as this message"
        assert (mine[0].finding, mine[0].node, mine[0].count) == (message.finding, "w1", 1)
        assert mine[0].line in message.example.strip()


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_message_cites_its_producer_source_and_releases(message: Message) -> None:
    assert message.producer.strip()
    assert message.versions.strip()
    assert message.example.strip()
    assert SOURCE.match(message.source), f"source is not owner/repo:path: {message.source!r}"


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_message_names_a_finding_a_rule_draws(message: Message) -> None:
    assert message.finding in RULE_IDS


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_pattern_is_quiet_on_an_empty_line_and_a_healthy_flanneld(message: Message) -> None:
    assert message.regex.pattern == message.pattern  # compiles
    assert not message.regex.search("")
    healthy = [line for line in HEALTHY_FLANNELD if message.regex.search(line)]
    # a line every healthy flanneld prints ("Using interface with name ...") may be catalogued
    # only as corroboration, never as what establishes a finding
    assert not (healthy and message.establishes), healthy[:1]


@pytest.mark.parametrize("where", WHERE)
def test_each_place_scans_with_one_combined_pattern(where: str) -> None:
    combined, chosen = CATALOGUE.for_where(where)
    assert chosen == tuple(m for m in MESSAGES if where in m.where)
    assert all(combined.search(m.example) for m in chosen)
    assert not combined.search("")


def test_healthy_flanneld_log_is_not_empty() -> None:
    """The quiet-on-healthy test above proves something only if it reads a real start-up."""
    assert len(HEALTHY_FLANNELD) > 20
    assert any("Wrote subnet file" in line for line in HEALTHY_FLANNELD)


def test_a_line_retyped_with_fullwidth_punctuation_is_recognised_and_quoted_as_given() -> None:
    line = "Error registering network\uff1afailed to acquire lease\uff1aout of subnets"
    seen = list(CATALOGUE.scan(FLANNEL_LOG, line, "w1", "test"))
    assert {s.finding for s in seen} == {"subnet-lease-exhausted"}
    assert seen[0].line == line
