"""JSON Lines and CSV exports stream: memory that does not grow with the log, and no
`max_report_events` cap (which stays for the Markdown and HTML reports, built in memory)."""

from __future__ import annotations

import tracemalloc

import pytest

from flannel_bot.errors import ReportTooLarge
from flannel_bot.ports.store import Requester
from flannel_bot.render import Renderer
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT
from flannel_bot.store import SqliteStore

RENDER = Renderer(REPO_ROOT / "templates")
EVENTS = 50_000
BOUND = 48 * 1024 * 1024  # streamed: ~16 MiB (a batch, the patterns); built: ~220 MiB
LOCAL = Requester("dave", {"adapter": "cli", "user": "dave"})


@pytest.fixture
def big_log(service: Service, store: SqliteStore) -> Service:
    with store.transaction() as tx:
        for i in range(EVENTS):
            tx.record(
                "command",
                actor=f"user{i % 7}",
                source={"adapter": "slack", "channel": "C1", "thread_ts": f"{i}.0"},
                data={"text": f"diagnose w{i % 5} " + "x" * 200},
            )
    return service


def peak_of(write: object) -> int:
    tracemalloc.start()
    try:
        assert callable(write)
        write()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_of_50000_events_holds_a_batch_not_the_log(big_log: Service, fmt: str) -> None:
    written = [0, 0]

    def count(line: str) -> None:
        written[0] += 1
        written[1] += len(line)

    def streamed() -> None:
        reply = big_log.handle(f"audit report format={fmt}", LOCAL)
        RENDER.write_export(reply.data["export"], fmt, count)

    def built() -> None:
        RENDER.report(big_log.report({}, LOCAL), fmt)

    peak = peak_of(streamed)
    assert written[0] == EVENTS + 2 and written[1] > EVENTS * 200  # + the header and the command
    assert peak < BOUND, f"{peak / 2**20:.1f} MiB"
    if fmt == "jsonl":  # once is enough (and slow under tracemalloc)
        assert peak_of(built) > BOUND  # what the bound tells apart


def test_the_event_cap_refuses_markdown_but_not_an_export(service: Service) -> None:
    capped = Service(service.clusters, service.store, max_report_events=1)
    for i in range(3):
        service.handle(f"audit report format=md thread={i}.0", LOCAL)
    with pytest.raises(ReportTooLarge):
        capped.report({}, LOCAL)
    refused = capped.handle("audit report format=md", LOCAL)
    assert not refused.ok and "max_report_events" in str(refused.data)
    for fmt in ("jsonl", "csv"):
        reply = capped.handle(f"audit report format={fmt}", LOCAL)
        assert reply.ok, reply.data
        assert len(RENDER.reply(reply).splitlines()) > 3
