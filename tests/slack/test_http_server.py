"""bot.slack.server on its own: stopping it lets the request being served finish, it can be
stopped at any moment of its loop, and it holds no more connections than it has descriptors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from flannel_bot.settings import ConfigError, parse_slack
from flannel_bot.slack.server import HttpServer


def slow_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    time.sleep(0.5)
    start_response("200 OK", [("Content-Length", "5")])
    return [b"done\n"]


def server(app: Callable[..., Iterable[bytes]] = slow_app) -> HttpServer:
    return HttpServer(
        app, "127.0.0.1", 0, threads=2, read_timeout=5, max_body=1024, max_connections=100
    )


def test_shutdown_lets_the_request_being_served_finish() -> None:
    http = server()
    thread = threading.Thread(target=http.serve_forever)
    thread.start()
    host, port = http.server_address
    answers: list[bytes] = []

    def ask() -> None:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as resp:
            answers.append(resp.read())

    client = threading.Thread(target=ask)
    client.start()
    time.sleep(0.2)  # the request is being served
    http.shutdown()
    thread.join(timeout=10)
    client.join(timeout=10)
    assert answers == [b"done\n"]


def test_it_stops_cleanly_at_any_moment() -> None:
    for i in range(40):
        http = server()
        thread = threading.Thread(target=http.serve_forever)
        thread.start()
        time.sleep((i % 8) * 0.04)  # before, during and after the loop's 0.25 s wait
        http.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_connections_are_capped_by_the_descriptors_the_process_may_open() -> None:
    """Soft limit 1,100, hard 4,000 (containerd 2 gives containers soft 1,024): the soft limit
    is raised, and what still does not fit lowers the cap, with a warning naming the fix."""
    script = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1100, 4000))\n"
        "from flannel_bot.slack.server import connection_budget\n"
        "print(connection_budget(2000), connection_budget(10000),"
        " resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["2000", "2976", "4000"]
    assert "max_connections is 10000" in done.stderr and "ulimit -n" in done.stderr


def test_the_limits_come_from_slack_settings_and_are_checked() -> None:
    limits = parse_slack({"max_body_bytes": 65536, "read_timeout_seconds": 2.5}, {})
    assert (limits.max_body_bytes, limits.read_timeout_seconds) == (65536, 2.5)
    assert (limits.http_threads, limits.max_connections) == (16, 10_000)
    for key, value in [("max_body_bytes", 0), ("http_threads", 1.5), ("read_timeout_seconds", "9")]:
        with pytest.raises(ConfigError, match=f"{key} must be"):
            parse_slack({key: value}, {})
