"""Heavy commands in `serve` run in worker processes (bot.slack.workers): the reply still reaches
Slack, the audit log records each event once and its chain verifies, a worker killed during a
command is an error reply and the next command works, and the queue of heavy commands is bounded.

A command is held in its worker by a real API server that accepts the connection and never
answers (the `stalled` cluster), so the test knows the worker is mid-command when it connects."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_bot.lab.apiserver.server import write_kubeconfig
from flannel_bot.ports.store import Event
from tests.slack.conftest import CONFIG, EXAMPLE_CLUSTER, SlackBot


@pytest.fixture
def stalled(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A listening socket that never answers, and a kubeconfig naming it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        host, port = server.getsockname()[:2]
        yield server, write_kubeconfig(tmp_path / "stalled.kubeconfig", f"http://{host}:{port}")


@pytest.fixture
def bot_config(request: pytest.FixtureRequest, stalled: tuple[socket.socket, Path]) -> str:
    """One worker (or `param` workers) and a queue of one; a recorded cluster (the default) and
    a stalled one."""
    recorded = f'recording = "{EXAMPLE_CLUSTER}"\n'
    stalled_config = stalled[1]
    workers = getattr(request, "param", 1)
    return CONFIG.replace(recorded, 'default_cluster = "rec"\n') + (
        f"[serve]\nworkers = {workers}\nqueue = 1\n"
        f'[clusters.rec]\nrecording = "{EXAMPLE_CLUSTER}"\n'
        f'[clusters.stalled]\nkubeconfig = "{stalled_config}"\n'
    )


def events(bot: SlackBot, kind: str) -> list[Event]:
    return [e for e in bot.adapter.app.store.events() if e.kind == kind]


def test_a_diagnose_runs_in_a_worker_and_is_recorded_once(bot: SlackBot) -> None:
    seen: list[Event] = []
    bot.adapter.app.store.subscribe(seen.append)  # serve's listeners (metrics, progress)
    bot.command("diagnose")
    report = bot.messages(2)[1]
    assert "here it is" in json.dumps(report) and report["thread_ts"]
    pool = bot.adapter.heavy
    assert pool is not None
    ((verb, pid),) = pool.ran
    assert verb == "Diagnose" and pid not in (0, os.getpid()) and pid in pool.pids()
    (command,) = events(bot, "command")
    (diagnosed,) = events(bot, "diagnosed")
    assert command.data["text"] == "diagnose" and diagnosed.data["cluster"] == "rec"
    assert diagnosed.source["thread_ts"] == report["thread_ts"]
    # the events the worker committed reached serve's listeners, once each
    assert [e.id for e in seen] == [command.id, diagnosed.id]
    assert bot.adapter.app.store.verify().ok


def test_audit_verify_and_an_export_run_in_the_worker(bot: SlackBot) -> None:
    bot.command("audit verify")
    assert "audit chain OK" in json.dumps(bot.messages(2)[1])
    bot.command("audit report format=jsonl")
    bot.slack.wait_for("files.completeUploadExternal")
    (content,) = bot.slack.uploads.values()
    lines = [json.loads(line) for line in content.decode().splitlines()]
    assert lines[0]["type"] == "report"
    assert [e["kind"] for e in lines[1:]] == ["command", "command"]
    pool = bot.adapter.heavy
    assert pool is not None
    assert [verb for verb, _ in pool.ran] == ["Audit", "AuditReport"]
    assert all(pid not in (0, os.getpid()) for _, pid in pool.ran)
    assert bot.adapter.app.store.verify().ok


def test_a_killed_worker_is_an_error_reply_and_the_queue_is_bounded(
    bot: SlackBot, stalled: tuple[socket.socket, Path]
) -> None:
    server, _ = stalled
    pool = bot.adapter.heavy
    assert pool is not None
    bot.command("diagnose --cluster stalled")
    held, _ = server.accept()  # the worker is in the middle of it now
    try:
        (worker,) = pool.pids()
        bot.command("diagnose")  # waits for the one worker
        queued = bot.message_with("queued, number 1 in line")
        bot.command("audit verify")  # the queue (1) is full: refused
        (busy,) = bot.slack.wait_for("chat.postEphemeral", 1)
        assert "the bot is busy" in str(busy.params["text"])
        os.kill(worker, signal.SIGKILL)
        _, died = bot.slack.wait_for("chat.postEphemeral", 2, timeout=15)
    finally:
        held.close()
    assert "stopped before it answered (SIGKILL)" in str(died.params["text"])
    # the queued diagnose ran in a new worker and was answered in its thread
    report = bot.message_with("here it is", timeout=30)
    assert report["thread_ts"] == queued["thread_ts"]
    assert [verb for verb, _ in pool.ran] == ["Diagnose", "Diagnose"]
    assert pool.ran[0][1] == worker and pool.ran[1][1] not in (0, worker, os.getpid())
    failed = events(bot, "command_failed")
    assert [(e.data["text"], e.data["error_type"]) for e in failed] == [
        ("diagnose --cluster stalled", "WorkerDied")
    ]
    (rejected,) = events(bot, "command_rejected")
    assert rejected.data["text"] == "audit verify" and rejected.data["error_type"] == "QueueFull"
    assert [e.data["text"] for e in events(bot, "command")] == [
        "diagnose --cluster stalled",
        "audit verify",  # recorded with its refusal, before the queued one started
        "diagnose",
    ]
    assert len(events(bot, "diagnosed")) == 1
    assert bot.adapter.app.store.verify().ok


def test_shutdown_cancels_the_waiting_and_stops_the_running(
    bot: SlackBot, stalled: tuple[socket.socket, Path]
) -> None:
    server, _ = stalled
    pool = bot.adapter.heavy
    assert pool is not None
    bot.command("diagnose --cluster stalled")
    held, _ = server.accept()
    try:
        bot.command("diagnose")
        bot.message_with("queued, number 1 in line")
        pool.shutdown(timeout=0.5)
    finally:
        held.close()
    told = {str(c.params["text"]) for c in bot.slack.wait_for("chat.postEphemeral", 2)}
    assert told == {
        ":warning: the bot shut down while this command ran; ask again",
        ":warning: the bot is shutting down, so this command was not started; ask again",
    }
    assert pool.pids() == []
    assert bot.adapter.app.store.verify().ok


@pytest.mark.parametrize("bot_config", [0], indirect=True)
def test_workers_zero_runs_heavy_commands_in_serve(bot: SlackBot) -> None:
    assert bot.adapter.heavy is None
    bot.command("diagnose")
    assert "here it is" in json.dumps(bot.messages(2)[1])
    assert len(events(bot, "diagnosed")) == 1
