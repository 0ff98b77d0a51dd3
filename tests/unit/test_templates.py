"""Every shell template renders every reply and event kind the core produces (StrictUndefined)."""

from __future__ import annotations

from pathlib import Path

from flannel_bot.render import Renderer
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT
from flannel_bot.store import SqliteStore
from tests.conftest import who
from tests.fakes import FakeCluster

TEMPLATES = REPO_ROOT / "templates"
REPLY_KINDS = {
    "help",
    "runbooks",
    "diagnose",
    "plan",
    "run",
    "runs",
    "audit_events",
    "audit_verify",
    "error",
}


def test_every_reply_and_event_renders(
    service: Service, store: SqliteStore, cluster: FakeCluster
) -> None:
    renderer = Renderer(TEMPLATES)
    cluster.pods = [p for p in cluster.pods if p.node != "w3"]
    commands = [
        "help",
        "help run",
        "runbooks",
        "diagnose",
        "diagnose w1",
        "plan flannel.restart-pods@1.1.0 nodes=w2",
        "run flannel.restart-pods@1.1.0 nodes=w2",
        "status",
        "status 1",
        "audit",
        "audit run 1",
        "audit verify",
        "approve 99",
        "frobnicate",
        "run test.node-bounce node=w1",
    ]
    kinds = set()
    for text in commands:
        reply = service.handle(text, who("alice"))
        kinds.add(reply.kind)
        assert renderer.reply(reply).strip(), text
    kinds.add(service.handle("approve 1", who("bob")).kind)
    kinds.add(service.handle("deny 2 no", who("bob")).kind)
    kinds.add(service.handle("run flannel.restart-pods@1.1.0 nodes=w2", who("alice")).kind)
    kinds.add(service.handle("cancel 3", who("alice")).kind)
    assert kinds == REPLY_KINDS
    rendered = {e.kind: renderer.event(e) for e in store.events()}
    for kind in (
        "run_started",
        "step_started",
        "action_started",
        "action_finished",
        "check",
        "step_finished",
        "approval_requested",
        "approved",
        "run_succeeded",
        "denied",
        "run_cancelled",
    ):
        assert rendered[kind].startswith("[run "), kind


def test_every_template_file_is_used() -> None:
    names = {p.name.removesuffix(".txt.j2") for p in Path(TEMPLATES / "shell").glob("*.j2")}
    assert names == REPLY_KINDS | {"event"}
