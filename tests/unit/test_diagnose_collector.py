"""`diagnose` holds the cyclic garbage collector off while the rules run (their many short-lived
objects would otherwise start full collections that walk the whole evidence: at 5,000 probed
nodes, a third of the rules' time) and puts its threshold back after, also when a rule fails or
two diagnoses overlap in threads."""

from __future__ import annotations

import dataclasses
import gc
import threading

import pytest

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.rules import diagnose
from tests.unit.test_rules import healthy


class Watched(Evidence):
    """Evidence that notes the collector's threshold each time a rule asks for the probed
    nodes (and can be told to fail there, as a rule's bug would)."""

    seen: list[tuple[int, ...]]
    fail = False

    def probed(self) -> list[str]:
        self.seen.append(gc.get_threshold())
        if self.fail:
            raise RuntimeError("a rule's bug")
        return super().probed()


def watched() -> Watched:
    ev = healthy()
    copy = Watched(**{f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)})
    copy.seen = []
    return copy


def test_the_rules_run_with_the_collector_held_off_and_it_is_put_back() -> None:
    before = gc.get_threshold()
    ev = watched()
    assert diagnose(ev) == diagnose(healthy())
    assert ev.seen and all(t[0] >= 200_000 for t in ev.seen)
    assert gc.get_threshold() == before


def test_a_failing_rule_puts_the_threshold_back() -> None:
    before = gc.get_threshold()
    ev = watched()
    ev.fail = True
    with pytest.raises(RuntimeError):
        diagnose(ev)
    assert gc.get_threshold() == before


def test_overlapping_diagnoses_put_back_the_threshold_of_before_the_first() -> None:
    before = gc.get_threshold()
    inside, release = threading.Event(), threading.Event()

    class Held(Watched):
        def probed(self) -> list[str]:
            inside.set()
            release.wait(10)
            return super().probed()

    first = Held(**{f.name: getattr(watched(), f.name) for f in dataclasses.fields(Evidence)})
    first.seen = []
    thread = threading.Thread(target=diagnose, args=(first,))
    thread.start()
    assert inside.wait(10)
    second = watched()
    diagnose(second)  # starts and ends while the first is still running
    assert gc.get_threshold()[0] >= 200_000  # the first still holds it off
    release.set()
    thread.join(10)
    assert gc.get_threshold() == before
