"""Audit reports of a realistic incident, in every format, checked for who, what, when, where and
outcome; and no secret that passed through a step's output reaches any of them."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from html.parser import HTMLParser

import pytest

from flannel_bot.ports.nodes import CommandResult
from flannel_bot.render import Renderer
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT
from tests.conftest import who
from tests.fakes import FakeClock, FakeCluster

RENDER = Renderer(REPO_ROOT / "templates")
EXPORT = re.compile(r"`(flannel-bot audit report format=jsonl[^`]*) > audit.jsonl`")
SECRETS = (
    "xoxb-1234567890-abcdefghijkl",
    "hunter2-the-password",
    "Bearer abcdefghijklmnop1234",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
)


@pytest.fixture
def incident(service: Service, cluster: FakeCluster, clock: FakeClock) -> Service:
    """diagnose, plan, a refused self-approval, an approved destructive run that fails, the
    retry that works, and a step whose output carried secrets."""
    assert service.handle("diagnose", who("alice")).ok
    clock.advance(30)
    assert service.handle("plan flannel.restart-pods@1.1.0 nodes=w2", who("alice")).ok
    first = service.handle("run flannel.restart-pods@1.1.0 nodes=w2", who("alice"))
    assert first.data["status"] == "awaiting_approval"
    assert not service.handle("approve 1", who("alice")).ok  # not your own
    cluster.restart_seconds = None  # the replacement never comes up
    clock.advance(60)
    assert service.handle("approve 1", who("bob")).data["status"] == "failed"
    cluster.restart_seconds = 5
    clock.advance(120)
    service.handle("run flannel.restart-pods@1.1.0 nodes=w2", who("alice"))
    clock.advance(45)
    assert service.handle("approve 2", who("carol")).data["status"] == "succeeded"
    cluster.command_results[("w3", "cat", "/run/flannel/subnet.env")] = CommandResult(
        "w3",
        ("cat", "/run/flannel/subnet.env"),
        0,
        f"FLANNEL_NETWORK=10.244.0.0/16\ntoken={SECRETS[0]}\npassword: {SECRETS[1]}\n"
        f"Authorization: {SECRETS[2]}\n{SECRETS[3]}\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n",
    )
    clock.advance(10)
    assert service.handle("run test.show-node node=w3", who("alice")).data["status"] == (
        "succeeded"
    )
    return service


def report(service: Service, fmt: str, *selection: str) -> str:
    reply = service.handle(["audit", "report", *selection, f"format={fmt}"], who("carol"))
    assert reply.ok and reply.kind == "audit_report", reply.data
    return RENDER.reply(reply)


def test_markdown_tells_who_what_when_where_and_how_it_ended(incident: Service) -> None:
    md = report(incident, "md")
    assert "Audit chain:** verified" in md
    assert "### Run 1: `flannel.restart-pods@1.1.0` — FAILED" in md
    assert "### Run 2: `flannel.restart-pods@1.1.0` — SUCCEEDED" in md
    assert "requested by **alice**" in md
    assert "- approved by **bob** at 2026-11-21T12:01:30" in md
    assert "- approved by **carol**" in md
    assert "DELETE /api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-w2aaa" in md
    assert "did not pass within 180s" in md  # why run 1 failed
    assert "alice: refused: alice requested this run and cannot approve it" in md
    assert "diagnose on cluster default: 0 critical" in md
    head = incident.store.verify().head_hash
    assert f"head `{head}`" in md


def test_html_is_self_contained_and_holds_the_timeline(incident: Service) -> None:
    html = report(incident, "html")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert 'id="chart"' in html and "<rect" in html and "run 1: failed" in html
    assert "approved by <b>bob</b>" in html and 'class="status s-succeeded"' in html
    assert_balanced(html)


def assert_balanced(html: str) -> None:
    """Every element the page opens is closed, in order."""

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag not in ("meta", "br", "line", "circle", "rect", "link", "img"):
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if tag in ("line", "circle", "rect"):
                return
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
            self.stack.pop()

    parser = Tags()
    parser.feed(html)
    assert parser.stack == []


def test_csv_has_a_row_per_event_with_run_and_outcome(incident: Service) -> None:
    rows = list(csv.DictReader(io.StringIO(report(incident, "csv"))))
    assert len(rows) == len(incident.store.events())  # the report's own request included
    failed = [r for r in rows if r["kind"] == "run_failed"]
    assert failed[0]["run"] == "1" and failed[0]["status"] == "failed"
    assert {r["chain_verified"] for r in rows} == {"True"}
    approved = [(r["actor"], r["run"]) for r in rows if r["kind"] == "approved"]
    assert approved == [("bob", "1"), ("carol", "2")]


def test_json_lines_carry_the_chain_and_every_event(incident: Service) -> None:
    lines = [json.loads(line) for line in report(incident, "jsonl").splitlines()]
    head, events = lines[0], lines[1:]
    assert head["type"] == "report" and head["chain"]["ok"] is True
    assert head["chain"]["head"] == incident.store.verify().head_hash
    assert [e["kind"] for e in events][:3] == ["command", "diagnosed", "command"]
    assert all(e["type"] == "event" and e["hash"] for e in events)


def test_selecting_by_run_user_node_and_time(incident: Service, clock: FakeClock) -> None:
    only_2 = report(incident, "md", "run=2")
    assert "### Run 2" in only_2 and "### Run 1" not in only_2
    bob = report(incident, "md", "user=bob")
    assert "### Run 1" in bob and "### Run 2" not in bob
    w3 = report(incident, "md", "node=w3")
    assert "test.show-node" in w3 and "restart-pods" not in w3.split("## Timeline")[0]
    recent = report(incident, "md", "--since", "1m")
    assert "test.show-node" in recent and "### Run 1" not in recent
    assert "No runs in this selection" in report(incident, "md", "runbook=node.check")


def test_bad_selections_are_refused_clearly(incident: Service) -> None:
    for words, message in [
        ("--since yesterday", "`since=yesterday` is not a valid since"),
        ("color=red", "`audit report` has no `color`"),
        ("format=pdf", "`format=pdf` is not a valid format"),
        ("--since 1h --from 2026-11-21", "give --since or --from, not both"),
        ("node=w2;reboot", "`node=w2;reboot` is not a valid node"),
    ]:
        reply = incident.handle(f"audit report {words}", who("alice"))
        assert not reply.ok and message in reply.data["message"], reply.data


def test_no_secret_from_a_step_output_reaches_the_store_or_a_report(
    incident: Service, tmp_path: object
) -> None:
    raw = "\n".join(
        " ".join(str(v) for v in row)
        for row in incident.store.db.execute("SELECT * FROM events").fetchall()
    )
    assert "FLANNEL_NETWORK=10.244.0.0/16" in raw  # the output is kept...
    for fmt in ("md", "html", "csv", "jsonl"):
        text = report(incident, fmt)
        assert "FLANNEL_NETWORK" in text or fmt in ("csv",)
        for secret in (*SECRETS, "b3BlbnNzaC1rZXktdjEAAAAA"):
            assert secret not in raw and secret not in text, (fmt, secret)  # ...its secrets not


def test_a_report_too_big_to_build_is_summarised_with_how_to_export_it(
    incident: Service,
) -> None:
    """Over `max_report_events` a Markdown or HTML report lists the runs and counts the events
    by kind instead of laying out each event, and says how to stream them all."""
    incident.max_report_events = 20
    counted = incident.store.last_event_id() + 1  # and the report's own command
    md = report(incident, "md", "--since", "1h")
    assert "**Summarised:** the per-event record is left out" in md
    assert f"this selection holds {counted:,} audit events, more than the 20" in md
    assert "`flannel-bot audit report format=jsonl since=1h > audit.jsonl`" in md
    assert "Audit chain:** verified" in md and f"{counted} events from" in md
    assert "| 1 | `flannel.restart-pods@1.1.0` | failed | default | alice | bob | w2 |" in md
    assert "| 2 | `flannel.restart-pods@1.1.0` | succeeded | default | alice | carol | w2 |" in md
    assert "| 3 | `test.show-node@1.0.0` | succeeded | default | alice | none | w3 |" in md
    assert "| command | 9 |" in md and "| approved | 2 |" in md and "| run_failed | 1 |" in md
    assert "### Run 1" not in md and "## Timeline" not in md and "exit 0" not in md

    html = report(incident, "html", "--since", "1h")
    assert 'id="summarised"' in html and "format=jsonl since=1h &gt; audit.jsonl" in html
    assert "<td>carol</td>" in html and "<td>approved</td><td>2</td>" in html
    assert 'id="events"' not in html and 'id="chart"' not in html
    assert_balanced(html)

    export = incident.handle(shlex.split(EXPORT.search(md)[1])[1:], who("carol"))  # type: ignore[index]
    assert export.ok and export.data["format"] == "jsonl"

    incident.max_report_events = 1000  # under the cap: the whole record, as before
    whole = report(incident, "md", "--since", "1h")
    assert "Summarised" not in whole and "### Run 1" in whole and "## Timeline" in whole
