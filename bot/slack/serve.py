"""`flannel-bot serve`: the Slack adapter over Socket Mode (default) or HTTP, and its operations
endpoints.

Socket Mode needs no public URL: the bot opens a WebSocket to Slack with the app-level token.
HTTP mode also serves POST /slack/events (bot.slack.events: its body capped and its signature
verified before Bolt parses it). Either way one HTTP server (bot.slack.server: waitress, a
bounded pool of threads and a read timeout) answers GET /healthz and GET /metrics (Prometheus).
With a Lease configured (`[leader]`), a replica serves Slack only while it leads; a standby
answers /healthz meanwhile, and GET /readyz answers 503 on it, so a Service in front of
HTTP-mode replicas routes Slack's requests to the leader alone.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt.adapter.socket_mode import SocketModeHandler

from flannel_bot.process.leader import LeaderElector
from flannel_bot.process.metrics import METRICS, EventMetrics, Metrics
from flannel_bot.settings import ConfigError, SlackSettings
from flannel_bot.slack.app import SlackAdapter
from flannel_bot.slack.events import answer, slack_events
from flannel_bot.slack.server import HttpServer, WsgiApp
from flannel_bot.wiring import App

log = logging.getLogger(__name__)


def wsgi_app(
    adapter: SlackAdapter,
    status: Callable[[], str] = lambda: "serving",
    clock: Callable[[], float] = time.time,
) -> WsgiApp:
    slack = slack_events(adapter, clock)
    http_mode = adapter.settings.mode == "http"

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/healthz" and method == "GET":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"ok {status()}\n".encode()]
        if path == "/readyz" and method == "GET":  # in HTTP mode: route Slack to the leader only
            serving = status() == "serving"
            start_response("200 OK" if serving else "503 Service Unavailable", [])
            return [b"ready\n" if serving else b"standby\n"]
        if path == "/metrics" and method == "GET":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [METRICS.render().encode()]
        if path == "/slack/events" and http_mode and status() == "serving":
            if method != "POST":
                return answer(start_response, 405, "POST only\n", [("Allow", "POST")])
            return slack(environ, start_response)
        return answer(start_response, 404, "not found\n")

    return application


def watch_metrics(app: App, metrics: Metrics = METRICS) -> None:
    """Feed `metrics` from the audit events this process commits, and read runs by cluster and
    state from the database at each scrape."""

    def runs() -> list[tuple[str, str, int]]:
        query = "SELECT cluster, status, COUNT(*) FROM runs GROUP BY cluster, status"
        return [(str(c), str(s), int(n)) for c, s, n in app.store.db.execute(query).fetchall()]

    metrics.read_runs(app.clusters.names, runs)
    app.store.subscribe(
        EventMetrics(metrics, cluster_of=lambda run_id: app.store.run(run_id).cluster)
    )


def http_server(
    adapter: SlackAdapter, host: str, port: int, status: Callable[[], str] = lambda: "serving"
) -> HttpServer:
    settings = adapter.settings
    return HttpServer(
        wsgi_app(adapter, status),
        host,
        port,
        threads=settings.http_threads,
        read_timeout=settings.read_timeout_seconds,
        max_body=settings.max_body_bytes,
        max_connections=settings.max_connections,
    )


def socket_mode_handler(adapter: SlackAdapter) -> SocketModeHandler:
    return SocketModeHandler(
        adapter.bolt, app_token=adapter.settings.app_token, web_client=adapter.client
    )


def freeze_start_up_heap() -> None:
    """Keep what start-up built (modules, templates, the app, a recorded cluster) out of the
    cycle collector's passes: a full pass walks every tracked object with the GIL held, and on
    serve's start-up heap (78,000 objects, bench/slack_ack.py's bot) it stalled every thread,
    acks included, for about 40 ms. What is built later is collected as before."""
    gc.collect()
    gc.freeze()


def _prune_daily(app: App, days: int) -> None:
    while True:
        try:
            result = app.store.prune(app.engine.clock.now() - timedelta(days=days))
            if result["events"]:
                log.info("pruned %d audit events older than %d days", result["events"], days)
        except Exception:
            log.exception("pruning the audit log failed")
        time.sleep(86400)


def _serve_slack(adapter: SlackAdapter, settings: SlackSettings, stop: threading.Event) -> None:
    """Serve Slack until `stop`: the Socket Mode connection, or nothing extra in HTTP mode (the
    ops server routes /slack/events once this replica serves)."""
    adapter.app.engine.recover()
    adapter.progress.start()
    if settings.mode == "socket":
        handler = socket_mode_handler(adapter)
        handler.connect()  # type: ignore[no-untyped-call]
        print("connected to Slack over Socket Mode", flush=True)
        stop.wait()
        handler.close()  # type: ignore[no-untyped-call]
    else:
        stop.wait()


def serve(
    app: App,
    settings: SlackSettings,
    stop: threading.Event | None = None,
    retention_days: int = 0,
    elector: LeaderElector | None = None,
) -> int:
    problems = settings.problems()
    if problems:
        raise ConfigError("cannot serve Slack: " + "; ".join(problems))
    watch_metrics(app)
    adapter = SlackAdapter(app, settings)
    if adapter.heavy is not None:
        adapter.heavy.start()
    if settings.audit_head_every_minutes > 0:
        adapter.beacon.every(settings.audit_head_every_minutes)
    if retention_days > 0:
        threading.Thread(
            target=_prune_daily, args=(app, retention_days), name="audit-prune", daemon=True
        ).start()
    if stop is None:
        stop = threading.Event()
        done = stop
        for sig in (signal.SIGTERM, signal.SIGINT):  # docker stop, Ctrl-C: finish cleanly
            signal.signal(sig, lambda *_: done.set())
    freeze_start_up_heap()
    state = {"now": "standby" if elector else "serving"}
    server = http_server(adapter, settings.host, settings.port, lambda: state["now"])
    host, port = str(server.server_address[0]), int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    where = "/slack/events, " if settings.mode == "http" else ""
    # the line a supervisor (or a test) waits for: the port may have been picked here
    print(f"serving {where}/healthz and /metrics on http://{host}:{port}", flush=True)
    lost_lead = False
    try:
        if elector is None:
            _serve_slack(adapter, settings, stop)
        else:

            def lead(lost: threading.Event) -> None:
                state["now"] = "serving"
                print(f"leading as {elector.identity}", flush=True)
                _serve_slack(adapter, settings, lost)
                state["now"] = "standby"

            elector.run(lead, stop)
            lost_lead = not stop.is_set()
    finally:
        server.shutdown()
        adapter.beacon.stop()
        adapter.close()  # heavy commands waiting for a worker are cancelled, and told so
        adapter.progress.stop()
    return 1 if lost_lead else 0  # a replica that lost the Lease exits, to come back a standby
