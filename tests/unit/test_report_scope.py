"""What a report may cover and where it may go: a run is always whole, a channel's trail is posted
only in that channel (unless an auditor asks), and bad dates get a one-line error."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.ports.store import Requester
from flannel_bot.render import Renderer
from flannel_bot.runs.engine import Engine
from flannel_bot.service.clusters import Cluster, Clusters
from flannel_bot.service.commands import AuditReport, parse_text
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT, ConfigError, load_settings
from flannel_bot.store import SqliteStore
from tests.conftest import POLICY
from tests.fakes import FakeClock

RENDER = Renderer(REPO_ROOT / "templates")
RUN = "run flannel.restart-pods@1.1.0 nodes=w2"


def slack(user: str, channel: str, thread: str = "1700000000.000100") -> Requester:
    return Requester(
        user, {"adapter": "slack", "channel": channel, "thread_ts": thread, "user": user}
    )


def cli(user: str) -> Requester:
    return Requester(user, {"adapter": "cli", "user": user})


def report_of(service: Service, text: str, by: Requester) -> dict[str, Any]:
    reply = service.handle(text, by)
    assert reply.ok and reply.kind == "audit_report", reply.data
    return dict(reply.data["report"])


@pytest.fixture
def two_channels(service: Service, clock: FakeClock) -> Service:
    """Run 1 asked in C1 and approved from the CLI; run 2 asked and approved in the private
    channel CPRIV."""
    assert service.handle(RUN, slack("alice", "C1")).data["status"] == "awaiting_approval"
    clock.advance(30)
    assert service.handle("approve 1", cli("bob")).data["status"] == "succeeded"
    clock.advance(30)
    assert service.handle(RUN, slack("alice", "CPRIV", "1700000001.000100")).ok
    clock.advance(30)
    assert service.handle("approve 2", slack("carol", "CPRIV", "1700000001.000100")).ok
    return service


def test_a_channel_report_holds_every_event_of_its_runs(two_channels: Service) -> None:
    data = report_of(two_channels, "audit report channel=C1 format=md", cli("dave"))
    assert data["summary"]["approvals"] == 1
    (run,) = data["runs"]
    assert run["id"] == 1 and [a["who"] for a in run["approvals"]] == ["bob"]
    every = [e.id for e in two_channels.store.events(run_id=1)]
    assert every == [e["id"] for e in data["events"] if e["run_id"] == 1]
    md = RENDER.reply(two_channels.handle("audit report channel=C1 format=md", cli("dave")))
    assert "- approved by **bob**" in md and "no approval given" not in md


def test_a_run_is_whole_even_when_a_time_window_cuts_it(two_channels: Service) -> None:
    approved = next(e for e in two_channels.store.events(run_id=2) if e.kind == "approved")
    data = report_of(two_channels, f"audit report --from {approved.ts}", cli("dave"))
    assert [r["id"] for r in data["runs"]] == [2]
    assert data["runs"][0]["requester"] == "alice"  # from its run_started, before the window
    kinds = [e["kind"] for e in data["events"] if e["run_id"] == 2]
    assert kinds[0] == "run_started" and [e.kind for e in two_channels.store.events(2)] == kinds
    assert [a["who"] for a in data["runs"][0]["approvals"]] == ["carol"]


def test_a_channel_report_leaks_nothing_of_another_channels_runs(two_channels: Service) -> None:
    data = report_of(two_channels, "audit report channel=C1 format=md", cli("dave"))
    assert [r["id"] for r in data["runs"]] == [1]
    assert all(e["source"].get("channel") != "CPRIV" for e in data["events"])


def test_a_channel_trail_is_posted_only_in_that_channel(two_channels: Service) -> None:
    mallory = slack("mallory", "CPUB")
    refused = two_channels.handle("audit report channel=CPRIV format=jsonl", mallory)
    assert not refused.ok and refused.data["error_type"] == "NotAllowed"
    message = refused.data["message"]
    assert "CPRIV" in message and "audit_all_channels" in message and "\n" not in message
    # a selection without a channel covers the channel it is asked in, whatever else it names
    for text in ("audit report run=2", "audit report user=carol", "audit report"):
        data = report_of(two_channels, text, mallory)
        assert data["runs"] == [], text
        assert all(e["source"].get("channel") == "CPUB" for e in data["events"]), text
        assert "channel CPUB" in data["selection"]
    trail = two_channels.handle("audit run 2", mallory)
    assert not trail.ok and trail.data["error_type"] == "NotAllowed"
    recent = two_channels.handle("audit", mallory)
    assert recent.ok and all(e["source"].get("channel") == "CPUB" for e in recent.data["events"])
    # in its own channel, the run's trail and report are there
    own = slack("carol", "CPRIV", "1700000001.000100")
    assert two_channels.handle("audit run 2", own).ok
    assert [r["id"] for r in report_of(two_channels, "audit report", own)["runs"]] == [2]


def test_auditors_may_report_on_any_channel(
    make_engine: Callable[..., Engine], store: SqliteStore, two_channels: Service
) -> None:
    policy = dataclasses.replace(
        POLICY,
        groups={**POLICY.groups, "auditors": frozenset({"erin"})},
        audit_all_channels=("auditors",),
    )
    service = Service(Clusters.single(Cluster("default", make_engine(policy=policy), None)), store)
    data = report_of(service, "audit report channel=CPRIV", slack("erin", "CPUB"))
    assert [r["id"] for r in data["runs"]] == [2]
    assert service.handle("audit run 2", slack("erin", "CPUB")).ok
    assert not service.handle("audit report channel=CPRIV", slack("mallory", "CPUB")).ok


def test_the_cli_reads_every_channel(two_channels: Service) -> None:
    """Whoever runs the CLI on the bot's host can read the SQLite file itself."""
    data = report_of(two_channels, "audit report channel=CPRIV", cli("dave"))
    assert [r["id"] for r in data["runs"]] == [2]


def test_who_audits_every_channel_is_configured(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[policy]\naudit_all_channels = ["auditors", "user:erin"]\n')
    policy = load_settings(config, env={"HOME": str(tmp_path)}).policy
    assert policy.audit_all_channels == ("auditors", "user:erin")
    assert not load_settings(None, env={"HOME": str(tmp_path)}).policy.audit_all_channels
    config.write_text('[policy]\naudit_all_channels = "auditors"\n')
    with pytest.raises(ConfigError, match="audit_all_channels must be a list"):
        load_settings(config, env={"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("--since 999999w", "`since=999999w` is longer than"),
        ("--from 2026-13-45", "`from=2026-13-45` is not a date: month must be in 1..12"),
        ("--to 2026-02-30T10:00", "`to=2026-02-30T10:00` is not a date: day is out of range"),
        ("--from 0000-01-01", "`from=0000-01-01` is not a date"),
        ("--from 2026-11-22 --to 2026-11-21", "--to (2026-11-21) is before --from"),
    ],
)
def test_bad_report_dates_get_a_one_line_error(service: Service, words: str, message: str) -> None:
    reply = service.handle(f"audit report {words}", cli("alice"))
    assert not reply.ok and reply.data["error_type"] == "CommandSyntaxError", reply.data
    assert message in reply.data["message"] and "\n" not in reply.data["message"]
    assert reply.data["usage"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize(
    "words", ["", "channel=C1", "channel=CPRIV", "run=2", "user=bob", "user=carol", "--since 1m"]
)
def test_a_streamed_export_writes_what_the_template_wrote(
    two_channels: Service, fmt: str, words: str
) -> None:
    """JSON Lines and CSV are written an event at a time: the same bytes the templates render
    from the report built in memory, for whole runs, cut runs and a window."""
    text = f"audit report {words} format={fmt}"
    reply = two_channels.handle(text, cli("dave"))
    assert reply.ok and "export" in reply.data, reply.data
    streamed = RENDER.reply(reply)
    command = parse_text(text)
    assert isinstance(command, AuditReport)
    built = two_channels.report(command.selection, cli("dave"))
    assert streamed == RENDER.report(built, fmt)
    assert len(streamed.splitlines()) == built["summary"]["events"] + 1


def test_a_runs_status_is_shown_only_where_its_trail_may_be(
    make_engine: Callable[..., Engine], store: SqliteStore, two_channels: Service
) -> None:
    """`status N` shows the run's events and approvals: its trail, confined as `audit run N` is;
    the list of runs in a channel holds that channel's runs."""
    mallory = slack("mallory", "CPUB")
    refused = two_channels.handle("status 2", mallory)
    assert not refused.ok and refused.data["error_type"] == "NotAllowed"
    assert "run 2" in refused.data["message"] and "\n" not in refused.data["message"]
    assert two_channels.handle("status", mallory).data["runs"] == []
    own = slack("carol", "CPRIV", "1700000001.000100")
    assert two_channels.handle("status 2", own).ok
    assert [r["id"] for r in two_channels.handle("status", own).data["runs"]] == [2]
    assert [r["id"] for r in two_channels.handle("status", cli("dave")).data["runs"]] == [2, 1]
    assert two_channels.handle("status 2", cli("dave")).ok
    policy = dataclasses.replace(
        POLICY,
        groups={**POLICY.groups, "auditors": frozenset({"erin"})},
        audit_all_channels=("auditors",),
    )
    service = Service(Clusters.single(Cluster("default", make_engine(policy=policy), None)), store)
    assert service.handle("status 2", slack("erin", "CPUB")).ok
    assert [r["id"] for r in service.handle("status", slack("erin", "CPUB")).data["runs"]] == [2, 1]
