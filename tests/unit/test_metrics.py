"""/metrics through prometheus_client: exact counts, histograms in bounded buckets, one registry
per Metrics (never the library's global one), and the cluster a series is about."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flannel_bot.ports.store import Event, EventKind
from flannel_bot.process.metrics import EventMetrics, Metrics


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def event(
    kind: str, run_id: int | None = None, ts: str = "2026-01-01T00:00:00.000000Z", **data: Any
) -> Event:
    return Event(0, ts, kind, run_id, "alice", {}, dict(data), "")


def test_a_large_count_is_exposed_exactly_not_rounded() -> None:
    metrics = Metrics()
    metrics.commands.labels(cluster="prod", verb="status").inc(1234567)
    text = metrics.render()
    assert "1.23457e+06" not in text  # `:g` kept six digits: 1,234,570
    # the library writes floats as Go (and so Prometheus) does: all the digits, an exponent
    assert 'flannel_bot_commands_total{cluster="prod",verb="status"} 1.234567e+06' in text
    key = ("flannel_bot_commands_total", frozenset({("cluster", "prod"), ("verb", "status")}))
    assert samples(text)[key] == 1234567.0


def test_a_histogram_keeps_buckets_not_observations() -> None:
    metrics = Metrics()
    step = metrics.step_duration.labels(cluster="prod")
    for i in range(1000):  # warm up: every bucket touched, any lazy state allocated
        step.observe(i % 700)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(100_000):
            step.observe((i * 7919) % 900 / 1.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Only what the metric's code (and this loop, where the floats are made) holds counts: a thread
    # another test left behind may allocate meanwhile, and its bytes are not the histogram's.
    mine = [
        tracemalloc.Filter(True, "*prometheus_client*"),
        tracemalloc.Filter(True, "*process/metrics.py"),
        tracemalloc.Filter(True, __file__),
    ]
    kept_before, kept_after = before.filter_traces(mine), after.filter_traces(mine)
    grown = sum(d.size_diff for d in kept_after.compare_to(kept_before, "filename"))
    assert grown < 16_384, f"100,000 observations grew memory by {grown} bytes"
    found = samples(metrics.render())
    count = found[("flannel_bot_step_duration_seconds_count", frozenset({("cluster", "prod")}))]
    assert count == 101_000


def test_each_metrics_has_its_own_registry_not_the_global_one() -> None:
    one, two = Metrics(), Metrics()  # two bots in one process: no "Duplicated timeseries"
    one.commands.labels(cluster="a", verb="help").inc()
    assert 'flannel_bot_commands_total{cluster="a",verb="help"}' not in two.render()
    assert "flannel_bot_commands_total" not in {
        s.name for family in REGISTRY.collect() for s in family.samples
    }


def test_run_events_are_counted_under_their_runs_cluster() -> None:
    metrics = Metrics()
    feed = EventMetrics(metrics, cluster_of=lambda run_id: {7: "edge"}.get(run_id, "?"))
    feed(event(EventKind.COMMAND, text="diagnose --cluster prod", cluster="prod"))
    feed(event(EventKind.COMMAND, text="help"))
    feed(event(EventKind.RUN_STARTED, run_id=3, cluster="prod"))
    feed(event(EventKind.APPROVED, run_id=3))
    feed(event(EventKind.STEP_STARTED, run_id=3, step=0))
    feed(event(EventKind.STEP_FINISHED, run_id=3, ts="2026-01-01T00:00:04.000000Z", step=0))
    feed(event(EventKind.RUN_SUCCEEDED, run_id=3))
    feed(event(EventKind.RUN_FAILED, run_id=7))  # started before this process: looked up
    value = metrics.value
    assert value("flannel_bot_commands_total", cluster="prod", verb="diagnose") == 1
    assert value("flannel_bot_commands_total", cluster="", verb="help") == 1
    assert value("flannel_bot_approvals_total", cluster="prod", decision="approved") == 1
    assert value("flannel_bot_runs_finished_total", cluster="prod", status="succeeded") == 1
    assert value("flannel_bot_runs_finished_total", cluster="edge", status="failed") == 1
    assert value("flannel_bot_step_duration_seconds_sum", cluster="prod") == 4
    assert value("flannel_bot_step_duration_seconds_bucket", cluster="prod", le="5.0") == 1
    assert value("flannel_bot_step_duration_seconds_bucket", cluster="prod", le="2.5") == 0


def test_a_denied_run_is_an_approval_decision_and_a_run_that_ended() -> None:
    metrics = Metrics()
    feed = EventMetrics(metrics)
    feed(event(EventKind.RUN_STARTED, run_id=5, cluster="edge"))
    feed(event(EventKind.DENIED, run_id=5, status="denied"))
    assert metrics.value("flannel_bot_approvals_total", cluster="edge", decision="denied") == 1
    assert metrics.value("flannel_bot_runs_finished_total", cluster="edge", status="denied") == 1
