"""JSON Lines and CSV exports stream: memory that does not grow with the log, and no
`max_report_events` cap. Over the cap a Markdown or HTML report (built in memory) is summarised
from the same stream: a line per run, no events."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from flannel_bot.ports.store import EventKind, Requester
from flannel_bot.render import Renderer
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.registry import Registry
from flannel_bot.service.clusters import Cluster, Clusters
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT
from flannel_bot.store import SqliteStore
from tests.conftest import POLICY
from tests.fakes import FakeClock, FakeCluster

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


def test_the_event_cap_summarises_markdown_and_leaves_exports_whole(service: Service) -> None:
    capped = Service(service.clusters, service.store, max_report_events=1)
    for i in range(3):
        service.handle(f"audit report format=md thread={i}.0", LOCAL)
    summarised = capped.report({}, LOCAL)
    assert summarised["summarised"]["events"] == 3 and summarised["runs"] == []
    assert summarised["by_kind"] == {"command": 3}
    reply = capped.handle("audit report format=md", LOCAL)
    assert reply.ok, reply.data
    md = RENDER.reply(reply)
    assert "holds 4 audit events, more than the 1 " in md and "| command | 4 |" in md
    assert "`flannel-bot audit report format=jsonl > audit.jsonl`" in md
    for fmt in ("jsonl", "csv"):
        reply = capped.handle(f"audit report format={fmt}", LOCAL)
        assert reply.ok, reply.data
        assert len(RENDER.reply(reply).splitlines()) > 3


def _plan(node: str) -> dict[str, object]:
    """A plan the size of a real node.check's (~6 kB of JSON): what a run row carries."""
    action = {"argv": ["cat", "/run/flannel/subnet.env"], "node": node, "sudo": False}
    render = f"ssh {node} -- cat /run/flannel/subnet.env  (a failure is recorded, not fatal)"
    return {
        "steps": [{"actions": [{**action, "render": render}] * 18}],
        "targets": [f"node/{node}"],
    }


RUN_KINDS = [
    EventKind.RUN_STARTED,
    EventKind.STEP_STARTED,
    *[EventKind.ACTION_STARTED, EventKind.ACTION_FINISHED] * 3,
    EventKind.STEP_FINISHED,
    EventKind.RUN_SUCCEEDED,
]


def log_of_runs(store: SqliteStore, runs: int) -> None:
    """`runs` runs, each with its plan and 10 events (a step, actions on a node, an ending) that
    agree with its row, then a chained `audit_verified` marker, as the serve process leaves."""
    code_hash = "sha256:" + "0" * 64
    with store.transaction() as tx:
        for r in range(runs):
            node, source = f"w{r % 5}", {"adapter": "slack", "channel": "C1", "thread_ts": f"{r}.0"}
            plan_hash = f"{r:064x}"
            run_id = tx.insert_run(
                cluster="default",
                runbook="node.check",
                version="1.0.0",
                code_hash=code_hash,
                params={"node": node},
                requester="alice",
                source=source,
                plan=_plan(node),
                plan_hash=plan_hash,
                status="succeeded",
                approvals_required=0,
                owner=None,
            )
            data: dict[EventKind, dict[str, Any]] = {
                EventKind.RUN_STARTED: {
                    "runbook": "node.check@1.0.0",
                    "code_hash": code_hash,
                    "cluster": "default",
                    "plan_hash": plan_hash,
                },
                EventKind.ACTION_STARTED: {"action": {"node": node}},
                EventKind.RUN_SUCCEEDED: {"status": "succeeded"},
            }
            for kind in RUN_KINDS:
                tx.record(kind, actor="alice", run_id=run_id, source=source, data=data.get(kind))
    assert store.record_verified(store.verify()) is not None


@pytest.fixture(scope="module")
def logs_of_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Service]:
    """Two logs, the second with 4.4 times the runs and events; the first is more than one
    4,096-event batch, so both read full batches."""
    clock = FakeClock()
    services = {}
    for runs in (450, 2000):
        store = SqliteStore(tmp_path_factory.mktemp("log") / "audit.db", clock)
        cluster = FakeCluster(clock)
        engine = Engine(
            store=store,
            registry=Registry.from_package("runbooks"),
            policy=POLICY,
            kube=cluster,
            nodes=cluster,
            clock=clock,
            owner="test-owner",
            owner_alive=lambda owner: owner == "test-owner",
        )
        log_of_runs(store, runs)
        services[runs] = Service(Clusters.single(Cluster("default", engine, None)), store)
    return services


def export_peak(service: Service, fmt: str) -> tuple[int, int]:
    """Peak memory of a whole-log export, from the command to its last line; and its lines.
    Exported once first, so the redaction memo (bounded: 65,536 texts) holds this log's texts
    and what the second export allocates is its own."""
    lines = 0

    def count(_: str) -> None:
        nonlocal lines
        lines += 1

    def export() -> None:
        reply = service.handle(f"audit report format={fmt}", LOCAL)
        RENDER.write_export(reply.data["export"], fmt, count)

    export()
    lines = 0
    return peak_of(export), lines


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_keeps_a_line_per_run_not_its_plan(
    logs_of_runs: dict[int, Service], fmt: str
) -> None:
    """A whole-log export keeps a few hundred bytes per run (its runbook, status, nodes), not
    its row and plan (~20 kB): 1,550 more runs and 15,500 more events cost under 4 MiB more
    (they cost ~25 MiB when every run was read whole)."""
    peaks = {}
    for runs, service in logs_of_runs.items():
        peaks[runs], lines = export_peak(service, fmt)
        assert lines == service.store.last_event_id() + 1  # its first line, then every event
    small, large = peaks[450], peaks[2000]
    assert large < small + 4 * 2**20, f"{small / 2**20:.1f} MiB -> {large / 2**20:.1f} MiB"


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_summarised_report_keeps_a_line_per_run_not_the_events(
    logs_of_runs: dict[int, Service], fmt: str
) -> None:
    """Over `max_report_events` a Markdown or HTML report is read as an export is: 1,550 more
    runs and 15,500 more events cost under 4 MiB more, its lines included."""
    peaks = {}
    for runs, service in logs_of_runs.items():
        capped = Service(service.clusters, service.store, max_report_events=1000)

        def summarised(capped: Service = capped, runs: int = runs) -> None:
            text = RENDER.reply(capped.handle(f"audit report format={fmt}", LOCAL))
            assert "Summarised" in text and text.count("node.check@1.0.0") == runs

        summarised()  # the redaction memo fills, as in `export_peak`
        peaks[runs] = peak_of(summarised)
    small, large = peaks[450], peaks[2000]
    assert large < small + 4 * 2**20, f"{small / 2**20:.1f} MiB -> {large / 2**20:.1f} MiB"
