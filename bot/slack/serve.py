"""`flannel-bot serve`: the Slack adapter over Socket Mode (default) or HTTP.

Socket Mode needs no public URL: the bot opens a WebSocket to Slack with the app-level token.
HTTP mode serves POST /slack/events (every request's signature verified with the signing secret)
and GET /healthz on a threaded WSGI server.
"""

from __future__ import annotations

import logging
import signal
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.settings import ConfigError, SlackSettings
from bot.slack.app import SlackAdapter
from bot.wiring import App

log = logging.getLogger(__name__)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # Slack bursts: the default 5 makes clients retry or reset


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def wsgi_app(adapter: SlackAdapter) -> Callable[..., Iterable[bytes]]:
    slack = SlackRequestHandler(adapter.bolt, path="/slack/events")

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz" and environ.get("REQUEST_METHOD") == "GET":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        return slack(environ, start_response)

    return application


def http_server(adapter: SlackAdapter, host: str, port: int) -> WSGIServer:
    return make_server(
        host,
        port,
        wsgi_app(adapter),
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    )


def socket_mode_handler(adapter: SlackAdapter) -> SocketModeHandler:
    return SocketModeHandler(
        adapter.bolt, app_token=adapter.settings.app_token, web_client=adapter.client
    )


def _prune_daily(app: App, days: int) -> None:
    while True:
        try:
            result = app.store.prune(app.engine.clock.now() - timedelta(days=days))
            if result["events"]:
                log.info("pruned %d audit events older than %d days", result["events"], days)
        except Exception:
            log.exception("pruning the audit log failed")
        time.sleep(86400)


def serve(
    app: App,
    settings: SlackSettings,
    stop: threading.Event | None = None,
    retention_days: int = 0,
) -> int:
    problems = settings.problems()
    if problems:
        raise ConfigError("cannot serve Slack: " + "; ".join(problems))
    adapter = SlackAdapter(app, settings)
    app.engine.recover()
    adapter.progress.start()
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
    try:
        if settings.mode == "socket":
            handler = socket_mode_handler(adapter)
            handler.connect()  # type: ignore[no-untyped-call]
            print("connected to Slack over Socket Mode", flush=True)
            stop.wait()
            handler.close()  # type: ignore[no-untyped-call]
        else:
            server = http_server(adapter, settings.host, settings.port)
            host, port = str(server.server_address[0]), int(server.server_address[1])
            # the line a supervisor (or a test) waits for: the port may have been picked here
            print(f"serving Slack requests on http://{host}:{port}/slack/events", flush=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            stop.wait()
            server.shutdown()
    finally:
        adapter.beacon.stop()
        adapter.work.shutdown(wait=True, cancel_futures=False)
        adapter.progress.stop()
    return 0
