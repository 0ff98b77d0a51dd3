"""The HTTP server of `serve`: waitress, so that a slow or hostile client costs a socket, not a
thread.

waitress reads every connection in one I/O loop and hands a request to its fixed pool of worker
threads only once the request is whole, so a connection that trickles or stalls holds no worker,
and the pool (`http_threads`) is all the threads HTTP ever uses. A connection that sends nothing
for `read_timeout_seconds`, or whose request has not arrived whole within it, is closed. A head
that announces a body over `max_body_bytes` is answered 413 before any of the body is read, and
a chunked body is cut off at that size the same way. Above `max_connections` open connections
the server stops accepting until some close; each idle one costs a few kilobytes, and a body
larger than `BODY_IN_MEMORY` waits in a temporary file, not in memory.

gunicorn (a pre-fork master whose sync and gthread workers read a request in a worker thread)
would hold a worker per slow client and move the app into forked children, away from the
leader election and the Socket Mode connection that `serve` runs beside it.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

BODY_IN_MEMORY = 64 * 1024  # Slack's payloads are a few KB; anything larger spools to TMPDIR
MAX_HEAD_BYTES = 64 * 1024  # request line and headers: Slack sends well under 4 KB
_LOOP_SECONDS = 0.25  # how often the I/O loop looks at the clock when nothing happens
_DRAIN_SECONDS = 5.0  # on shutdown, how long requests being served may take to finish
_ACCEPT_BATCH = 1024  # connections accepted per wake-up at most (the listen backlog)
# descriptors kept for all else: SQLite, SSH to the nodes, Slack's Web API, the kube client
DESCRIPTOR_HEADROOM = 1024


class HttpServer:
    """waitress in this process, with `serve_forever` / `shutdown` / `server_address` as the
    standard library's servers have them."""

    def __init__(
        self,
        app: WsgiApp,
        host: str,
        port: int,
        *,
        threads: int,
        read_timeout: float,
        max_body: int,
        max_connections: int,
    ) -> None:
        self._map: dict[int, Any] = {}
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._closing = threading.Lock()  # no wake-up written to a pipe once it is closed
        self._closed = False
        adjustments = Adjustments(
            host=host,
            port=port,
            ident="flannel-bot",
            threads=threads,
            channel_timeout=read_timeout,
            cleanup_interval=min(max(read_timeout / 4, 0.1), 30.0),
            connection_limit=connection_budget(max_connections),
            max_request_body_size=max_body + 1,  # waitress refuses a body of this size or more
            max_request_header_size=MAX_HEAD_BYTES,
            inbuf_overflow=BODY_IN_MEMORY,
            backlog=1024,
            asyncore_use_poll=True,  # select() stops at 1,024 descriptors
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )
        # waitress warns at every request that waits for a free thread: in a burst of Slack
        # requests that is expected, and thousands of warnings would bury the ones that count
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        workers = ThreadedTaskDispatcher()
        workers.set_thread_count(threads)
        self._server = _Listener(
            app,
            self._map,
            dispatcher=workers,
            adj=adjustments,
            sockinfo=adjustments.listen[0],
        )

    @property
    def server_address(self) -> tuple[str, int]:
        return str(self._server.effective_host), int(self._server.effective_port)

    def serve_forever(self) -> None:
        """Serve until `shutdown`, then let the requests being served finish and close."""
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=_LOOP_SECONDS, map=self._map, use_poll=True, count=1)
            self._server.accepting = False
            deadline = time.monotonic() + _DRAIN_SECONDS
            while self._busy() and time.monotonic() < deadline:
                wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
            self._close_all()
            self._server.task_dispatcher.shutdown(timeout=_DRAIN_SECONDS)
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever`, from another thread, and wait until it has (as socketserver's,
        this waits for ever if `serve_forever` is not running)."""
        self._stopping.set()
        with self._closing:
            if not self._closed:
                self._server.trigger.pull_trigger()  # wakes the loop from its poll
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the socket of a server whose `serve_forever` never ran (socketserver's name)."""
        if not self._stopped.is_set():
            self._close_all()

    def _close_all(self) -> None:
        with self._closing:
            self._closed = True
            for dispatcher in list(self._map.values()):
                dispatcher.close()

    def _busy(self) -> bool:
        return any(c.requests or c.total_outbufs_len for c in self._server.active_channels.values())


def connection_budget(wanted: int) -> int:
    """How many connections this process can hold open: its soft descriptor limit raised
    toward `wanted` plus headroom, as far as the hard limit allows. Out of descriptors, accept()
    fails on every turn of the loop while the connection waits, a busy loop of warnings."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + DESCRIPTOR_HEADROOM
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    fits = max(soft - DESCRIPTOR_HEADROOM, 1)
    if fits < wanted:
        log.warning(
            "[slack] max_connections is %d, but this process may open %d descriptors "
            "(ulimit -n): serving %d connections at most; raise the limit to serve more",
            wanted,
            soft,
            fits,
        )
    return min(wanted, fits)


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """A connection that notes when the request it is receiving began."""

    request_started = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.time()
        return bool(super().received(data))


class _Listener(TcpWSGIServer):  # type: ignore[misc]
    """waitress's listening socket, accepting every waiting connection when it wakes, and
    giving each request the read timeout to arrive whole.

    waitress accepts one connection per turn of its loop, and a turn visits every open
    connection: with thousands open (slow clients) it accepts a few hundred a second, and
    Slack's connection waits in the kernel's queue behind theirs. And it closes a connection
    only once it has been silent for the timeout, so a client sending a byte now and then
    would hold its connection for ever."""

    channel_class = _Channel

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes the connections silent for the read timeout
        cutoff = now - self.adj.channel_timeout
        for channel in self.active_channels.values():
            receiving = channel.request is not None and not channel.requests
            if receiving and channel.request_started < cutoff:
                channel.will_close = True

    def handle_accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            if len(self._map) >= self.adj.connection_limit:
                return
            try:
                accepted = self.accept()
            except OSError:  # out of descriptors, say: the next turn tries again
                self.logger.warning("accept() failed", exc_info=True)
                return
            if accepted is None:
                return  # none waiting
            conn, addr = accepted
            try:
                self.set_socket_options(conn)
            except OSError:  # the client hung up before it was accepted
                conn.close()
                continue
            self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
