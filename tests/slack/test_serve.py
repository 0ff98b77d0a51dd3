"""`flannel-bot serve` as a real process: it refuses without tokens, serves signed requests and
/healthz in HTTP mode, and stops cleanly on SIGTERM (what `docker stop` sends)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from flannel_bot.slack.serve import serve
from flannel_bot.wiring import build_app
from tests.slack.conftest import CONFIG, SECRET, bot_settings
from tests.slack.fake_slack import PROXY_ENV_VARS, FakeSlack
from tests.slack.signing import sign, slash_command_body

FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_VARS and "SLACK" not in k}
    config = tmp_path / "flannel-bot.toml"
    config.write_text(CONFIG)
    return env | {
        "FLANNEL_BOT_CONFIG": str(config),
        "FLANNEL_BOT_DB": str(tmp_path / "bot.db"),
        **extra,
    }


def test_serve_without_tokens_says_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        [FLANNEL_BOT, "serve"], env=env_for(tmp_path), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "SLACK_BOT_TOKEN is not set" in done.stderr
    assert "SLACK_SIGNING_SECRET is not set" in done.stderr


def test_serve_answers_slack_over_http_and_stops_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    env = env_for(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.base_url,
    )
    proc = subprocess.Popen(
        [FLANNEL_BOT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving /slack/events, /healthz and /metrics on http://127.0.0.1:")
        base = line.split()[-1]
        url = f"{base}/slack/events"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.read() == b"ok serving\n"
        body = slash_command_body("help", user_id="UALICE")
        req = urllib.request.Request(url, data=body, headers=sign(SECRET, body), method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        reply = slack.wait_for("chat.postMessage", 2, timeout=15)[1]
        assert reply.params["thread_ts"] and "/flannel run" in str(reply.params["blocks"])
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            metrics = resp.read().decode()
        found = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
        }
        assert found[("flannel_bot_commands_total", (("cluster", ""), ("verb", "help")))] == 1
        assert found[("flannel_bot_slack_ack_seconds_count", ())] == 1
        # runs by state, for each cluster the bot serves, zero until a run is in that state
        assert found[("flannel_bot_runs", (("cluster", "default"), ("state", "running")))] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc/PID/task/TID/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.update(kids)
            todo.extend(kids)
    return found


def test_serve_runs_a_diagnose_in_a_worker_process_and_stops_it_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    env = env_for(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.base_url,
    )
    proc = subprocess.Popen(
        [FLANNEL_BOT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1] + "/slack/events"
        body = slash_command_body("diagnose", user_id="UALICE")
        req = urllib.request.Request(url, data=body, headers=sign(SECRET, body), method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        reply = slack.wait_for("chat.postMessage", 2, timeout=30)[1]
        assert reply.params["thread_ts"] and "here it is" in str(reply.params["blocks"])
        below = descendants(proc.pid)
        workers = {
            p
            for p in below
            if "multiprocessing.forkserver" in Path(f"/proc/{p}/cmdline").read_text()
        }
        assert len(workers) >= 3  # the forkserver and the two workers it forked
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in workers if Path(f"/proc/{p}").exists()] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_keeps_its_start_up_heap_out_of_the_collectors_full_passes(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """What start-up built is frozen (gc.freeze) before the first request: a full pass of the
    cycle collector walks every object it tracks with the GIL held, stalling every ack."""
    settings = bot_settings(slack, tmp_path, CONFIG)
    app = build_app(settings)
    stop = threading.Event()
    gc.unfreeze()
    thread = threading.Thread(target=serve, args=(app, settings.slack, stop), daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 20
        while not gc.get_freeze_count() and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.02)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # modules, templates and the app itself
    finally:
        stop.set()
        thread.join(30)
        gc.unfreeze()
        app.store.close()
    assert not thread.is_alive()
