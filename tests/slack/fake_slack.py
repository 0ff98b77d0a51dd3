"""A local stand-in for Slack's Web API and Socket Mode, for tests of the Slack adapter.

Everything listens on 127.0.0.1 with OS-chosen ports and runs on plain threads, so tests can
drive the real slack_sdk / slack_bolt clients with no network access and no asyncio loop.
Calls, uploads and Socket Mode traffic are recorded so tests can assert on what the bot sent.

Clients must not route through a proxy: slack_sdk reads HTTP(S)_PROXY from the environment, so
tests using this module should clear those variables (see ``PROXY_ENV_VARS``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
BOT_USER_ID, BOT_ID, TEAM_ID, APP_ID = "UBOT", "BBOT", "T111", "A111"
PROXY_ENV_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")

_JSON_PARAMS = ("blocks", "attachments", "files", "metadata")
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIRST_TS = 1_700_000_000_000_100  # microseconds; rendered as "1700000000.000100"

Params = dict[str, Any]
Answer = tuple[int, dict[str, Any], dict[str, str]]


@dataclass(frozen=True)
class Call:
    """One Web API request as the fake received it; ``at`` is ``time.monotonic()``."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]  # lower-cased names
    at: float
    rate_limited: bool = False


class Ack(NamedTuple):
    """A Socket Mode acknowledgement (``{"envelope_id", "payload"?}``) and when it arrived."""

    message: dict[str, Any]
    at: float


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server whose handler threads are joined on close, so none outlive a test."""

    daemon_threads = False
    block_on_close = True
    fake: FakeSlack

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep the fake's own failures for the test to see; a client hanging up is normal."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.fake.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ApiHandler(_Handler):
    def do_POST(self) -> None:
        self.server.fake._serve_http(self)

    do_GET = do_POST


class _SocketHandler(_Handler):
    protocol_version = "HTTP/1.1"  # a 101 answer needs HTTP/1.1

    def do_GET(self) -> None:
        self.close_connection = True
        self.server.fake._serve_socket(self)


class _WsConnection:
    """Server side of one WebSocket: unmasked frames out (RFC 6455 5.1), serialised sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.open = True

    def send(self, opcode: int, payload: bytes) -> None:
        with self.lock:
            if not self.open:
                raise ConnectionError("the Socket Mode connection is closed")
            self.sock.sendall(_frame(opcode, payload))

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(_TEXT, json.dumps(message).encode())

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and drop the TCP connection (slack_sdk never answers a close)."""
        with self.lock:
            if not self.open:
                return
            self.open = False
            try:
                self.sock.sendall(_frame(_CLOSE, struct.pack("!H", code) + reason.encode()))
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeSlack:
    """Slack's Web API (``base_url``) plus a Socket Mode WebSocket server, both on 127.0.0.1.

    Tests configure ``users``, ``usergroups``, ``rate_limit()`` and ``delay()``, then assert on
    ``calls()``/``wait_for()``, ``uploads``, and for Socket Mode ``socket_send()``/``acks``.
    """

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.uploads: dict[str, bytes] = {}
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._calls: list[Call] = []
        self._rate_limits: dict[str, tuple[int, int]] = {}
        self._delays: dict[str, float] = {}
        self._next_ts = _FIRST_TS
        self._next_file = 1
        self._pending_files: dict[str, Params] = {}
        self._tickets: set[str] = set()
        self._live: list[_WsConnection] = []
        self._connections = 0
        self._socket_messages: list[dict[str, Any]] = []
        self._acks: list[Ack] = []
        self._sent: dict[str, float] = {}
        self._servers: list[tuple[_Server, threading.Thread]] = []
        self._methods: dict[str, Callable[[Params], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "apps.connections.open": self._apps_connections_open,
        }

    # ----- lifecycle

    def start(self) -> Self:
        """Bind both servers on OS-chosen 127.0.0.1 ports and serve them on threads."""
        self._api = self._serve(_ApiHandler, "fake-slack-api")
        self._ws = self._serve(_SocketHandler, "fake-slack-socket")
        return self

    def stop(self) -> None:
        """Close WebSockets, stop both servers and join every thread they started."""
        self._stopping.set()
        self.socket_close_all(1001, "going away")
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join()
        self._servers.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, handler: type[_Handler], name: str) -> _Server:
        server = _Server((HOST, 0), handler)
        server.fake = self
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        thread.start()
        self._servers.append((server, thread))
        return server

    @property
    def base_url(self) -> str:
        """Web API root for ``WebClient(base_url=...)``, which appends the method name."""
        return f"http://{HOST}:{self._api.server_port}/api/"

    @property
    def socket_url(self) -> str:
        """WebSocket address without a ticket (tickets come from apps.connections.open)."""
        return f"ws://{HOST}:{self._ws.server_port}/link/"

    # ----- Web API: configuration and assertions

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        with self._cond:
            self._rate_limits[method] = (times, retry_after)

    def delay(self, method: str, seconds: float) -> None:
        """Hold every answer to ``method`` for ``seconds`` (0 removes the delay)."""
        with self._cond:
            self._delays[method] = seconds

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls in arrival order, optionally only those of one method."""
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Block until ``method`` was called ``count`` times; return all its calls."""
        with self._cond:
            if self._cond.wait_for(lambda: len(self.calls(method)) >= count, timeout):
                return self.calls(method)
            seen = [c.method for c in self._calls]
        raise AssertionError(f"expected {count} x {method} within {timeout}s; saw {seen}")

    # ----- Web API: serving

    def _serve_http(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            if url.path.startswith("/upload/"):
                status, payload, extra = self._upload(url.path.removeprefix("/upload/"), body)
            elif url.path.startswith("/api/"):
                method = url.path.removeprefix("/api/")
                headers = {k.lower(): v for k, v in h.headers.items()}
                status, payload, extra = self._api_call(method, headers, url.query, body)
            else:
                status, payload, extra = 404, _error("not_found"), {}
        except Exception as e:  # a bug in the fake: answer, and let the test see it
            self.errors.append(e)
            status, payload, extra = 500, _error(f"fake_slack_bug: {e!r}"), {}
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _api_call(self, method: str, headers: dict[str, str], query: str, body: bytes) -> Answer:
        try:
            params = _parse_params(headers.get("content-type", ""), body, query)
            problem = _auth_problem(method, headers)
        except ValueError:
            params, problem = {}, "invalid_json"
        with self._cond:
            times, retry_after = self._rate_limits.get(method, (0, 0))
            limited = problem is None and times > 0
            if limited:
                self._rate_limits[method] = (times - 1, retry_after)
            delay = self._delays.get(method, 0.0)
            self._calls.append(Call(method, params, headers, time.monotonic(), limited))
            self._cond.notify_all()
        if limited:
            return 429, _error("ratelimited"), {"Retry-After": str(retry_after)}
        if delay:
            self._stopping.wait(delay)
        if problem is not None:
            return 200, _error(problem), {}
        handler = self._methods.get(method)
        return 200, handler(params) if handler else _error("unknown_method"), {}

    def _ts(self) -> str:
        with self._cond:
            value, self._next_ts = self._next_ts, self._next_ts + 100
        return f"{value // 1_000_000}.{value % 1_000_000:06d}"

    def _auth_test(self, p: Params) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"http://{HOST}:{self._api.server_port}/",
            "team": "Fake Workspace",
            "user": "flannel-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, p: Params) -> dict[str, Any]:
        if not p.get("channel"):
            return _error("channel_not_found")
        if not any(p.get(k) for k in ("text", "blocks", "attachments")):
            return _error("no_text")
        ts = self._ts()
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts}
        message |= {k: p[k] for k in ("text", "blocks", "attachments", "thread_ts") if k in p}
        return {"ok": True, "channel": p["channel"], "ts": ts, "message": message}

    def _chat_update(self, p: Params) -> dict[str, Any]:
        if not p.get("channel"):
            return _error("channel_not_found")
        if not p.get("ts"):
            return _error("message_not_found")
        message = {k: p[k] for k in ("text", "blocks", "attachments") if k in p}
        return {
            "ok": True,
            "channel": p["channel"],
            "ts": p["ts"],
            "text": p.get("text", ""),
            "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, **message},
        }

    def _chat_delete(self, p: Params) -> dict[str, Any]:
        if not p.get("channel"):
            return _error("channel_not_found")
        if not p.get("ts"):
            return _error("message_not_found")
        return {"ok": True, "channel": p["channel"], "ts": p["ts"]}

    def _chat_post_ephemeral(self, p: Params) -> dict[str, Any]:
        if not p.get("channel"):
            return _error("channel_not_found")
        if not p.get("user"):
            return _error("user_not_in_channel")
        return {"ok": True, "message_ts": self._ts()}

    def _usergroups_users_list(self, p: Params) -> dict[str, Any]:
        users = self.usergroups.get(str(p.get("usergroup", "")))
        if users is None:
            return _error("no_such_subteam")
        return {"ok": True, "users": list(users)}

    def _users_info(self, p: Params) -> dict[str, Any]:
        user_id = str(p.get("user", ""))
        name = self.users.get(user_id)
        if name is None:
            return _error("user_not_found")
        profile = {"display_name": name, "real_name": name}
        user = {"id": user_id, "team_id": TEAM_ID, "name": name, "real_name": name}
        return {"ok": True, "user": user | {"deleted": False, "is_bot": False, "profile": profile}}

    def _files_get_upload_url(self, p: Params) -> dict[str, Any]:
        if not p.get("filename") or not str(p.get("length", "")).isdigit():
            return _error("invalid_arguments")
        with self._cond:
            file_id, self._next_file = f"F{self._next_file:010d}", self._next_file + 1
            self._pending_files[file_id] = {"filename": p["filename"], "length": int(p["length"])}
        upload_url = f"http://{HOST}:{self._api.server_port}/upload/{file_id}"
        return {"ok": True, "upload_url": upload_url, "file_id": file_id}

    def _upload(self, file_id: str, body: bytes) -> Answer:
        with self._cond:
            if file_id not in self._pending_files:
                return 404, _error("file_not_found"), {}
            self.uploads[file_id] = body
            self._cond.notify_all()
        return 200, {"ok": True, "size": len(body)}, {}

    def _files_complete_upload(self, p: Params) -> dict[str, Any]:
        files = p.get("files")
        if not isinstance(files, list) or not files:
            return _error("invalid_arguments")
        done = []
        with self._cond:
            for f in files:
                data = self.uploads.get(f.get("id"))
                if data is None:
                    return _error("file_not_found")
                name = self._pending_files[f["id"]]["filename"]
                title = f.get("title") or name
                done.append({"id": f["id"], "name": name, "title": title, "size": len(data)})
        return {"ok": True, "files": done}

    def _apps_connections_open(self, p: Params) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        with self._cond:
            self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.socket_url}?ticket={ticket}&app_id={APP_ID}"}

    # ----- Socket Mode: driving and assertions

    def wait_connected(self, timeout: float = 5.0, count: int = 1) -> None:
        """Block until ``count`` handshakes have completed and one connection is open."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._connections >= count and bool(self._live), timeout
            ):
                raise AssertionError(
                    f"expected {count} Socket Mode connection(s) within {timeout}s;"
                    f" saw {self._connections}, {len(self._live)} open"
                )

    @property
    def connections(self) -> int:
        """How many WebSocket handshakes have completed so far."""
        with self._cond:
            return self._connections

    def socket_send(
        self,
        type: str,
        payload: dict[str, Any],
        envelope_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool = False,
    ) -> str:
        """Deliver an envelope to the newest connection, as Slack does; return its id."""
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        conn = self._newest_connection()
        with self._cond:
            self._sent[envelope_id] = time.monotonic()
        conn.send_json(envelope)
        return envelope_id

    def sent_at(self, envelope_id: str) -> float:
        """``time.monotonic()`` when ``socket_send`` delivered the envelope (for ack latency)."""
        with self._cond:
            return self._sent[envelope_id]

    def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, then close its connection (Slack's refresh)."""
        conn = self._newest_connection()
        conn.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})
        conn.close(1000, reason)

    def socket_close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection from the server side (clients may reconnect)."""
        with self._cond:
            live = list(self._live)
        for conn in live:
            conn.close(code, reason)

    @property
    def acks(self) -> list[Ack]:
        with self._cond:
            return list(self._acks)

    @property
    def socket_messages(self) -> list[dict[str, Any]]:
        """Every text message clients sent over Socket Mode, acks included."""
        with self._cond:
            return list(self._socket_messages)

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        """Block until the client acknowledges ``envelope_id``; return the ack and its time."""

        def find() -> Ack | None:
            return next((a for a in self._acks if a.message["envelope_id"] == envelope_id), None)

        with self._cond:
            if self._cond.wait_for(lambda: find() is not None, timeout):
                ack = find()
                assert ack is not None
                return ack
            seen = [a.message for a in self._acks]
        raise AssertionError(f"no ack for {envelope_id} within {timeout}s; acks: {seen}")

    def _newest_connection(self) -> _WsConnection:
        with self._cond:
            if not self._live:
                raise AssertionError("no Socket Mode client is connected")
            return self._live[-1]

    # ----- Socket Mode: serving

    def _serve_socket(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        key = h.headers.get("Sec-WebSocket-Key", "")
        ticket = parse_qs(url.query).get("ticket", [""])[0]
        if url.path != "/link/" or h.headers.get("Upgrade", "").lower() != "websocket" or not key:
            h.send_error(400)
            return
        with self._cond:
            known = ticket in self._tickets
        if not known:
            h.send_error(401, "unknown ticket: call apps.connections.open first")
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        h.send_response(101, "Switching Protocols")
        h.send_header("Upgrade", "websocket")
        h.send_header("Connection", "Upgrade")
        h.send_header("Sec-WebSocket-Accept", accept)
        h.end_headers()
        conn = _WsConnection(h.connection)
        conn.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        with self._cond:
            self._live.append(conn)
            self._connections += 1
            self._cond.notify_all()
        try:
            self._read_loop(conn, h.rfile)
        except (OSError, EOFError):
            pass
        finally:
            conn.close(1000)
            with self._cond:
                self._live.remove(conn)
                self._cond.notify_all()

    def _read_loop(self, conn: _WsConnection, reader: _Reader) -> None:
        """Read client frames until close or EOF; answer pings, reassemble fragments."""
        fragments: list[bytes] = []
        while not self._stopping.is_set():
            fin, opcode, masked, data = _read_frame(reader)
            if not masked:  # RFC 6455 5.1: clients must mask every frame
                conn.close(1002, "unmasked client frame")
                return
            if opcode == _PING:
                conn.send(_PONG, data)
            elif opcode == _CLOSE:
                conn.close(1000)
                return
            elif opcode in (_TEXT, _BINARY, _CONT):
                fragments.append(data)
                if fin:
                    self._on_client_message(b"".join(fragments).decode())
                    fragments = []

    def _on_client_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = {"unparsed": text}
        with self._cond:
            self._socket_messages.append(message)
            if isinstance(message, dict) and "envelope_id" in message and "type" not in message:
                self._acks.append(Ack(message, time.monotonic()))
            self._cond.notify_all()


# ----- helpers


def close_socket_mode_client(client: Any, slack: FakeSlack) -> None:
    """Close a slack_sdk ``SocketModeClient`` in milliseconds instead of seconds.

    ``SocketModeClient.close()`` waits for its reader's blocking recv (3 s timeout) and its
    queue poll (1 s). Closing the socket from our side and waking the queue avoids both. We
    wait for the reader to drop the socket first: slack_sdk's ``Connection.disconnect`` checks
    ``sock`` outside its lock and raises if the reader clears it concurrently.
    """
    client.auto_reconnect_enabled = False
    client.closed = True
    slack.socket_close_all(1001, "going away")
    deadline = time.monotonic() + 5.0
    while client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.005)
    client.message_queue.put(None)
    client.close()


def _error(code: str) -> dict[str, Any]:
    return {"ok": False, "error": code}


def _auth_problem(method: str, headers: dict[str, str]) -> str | None:
    """Slack wants the token as a Bearer header; app-level tokens only for Socket Mode."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme != "Bearer" or not token:
        return "not_authed"
    wanted = "xapp-" if method == "apps.connections.open" else "xoxb-"
    return None if token.startswith(wanted) else "invalid_auth"


def _parse_params(content_type: str, body: bytes, query: str) -> Params:
    """Merge query and body (JSON or form); JSON-in-form values like ``blocks`` become lists."""
    params: Params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body and content_type.startswith("application/json"):
        decoded = json.loads(body)
        if not isinstance(decoded, dict):
            raise ValueError("JSON body must be an object")
        params |= decoded
    elif body:
        form = parse_qs(body.decode(), keep_blank_values=True)
        params |= {k: v[-1] for k, v in form.items()}
    for key in _JSON_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value.startswith(("[", "{")):
            params[key] = json.loads(value)
    return params


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _read_exact(reader: _Reader, n: int) -> bytes:
    data = reader.read(n)
    if len(data) < n:
        raise EOFError("WebSocket closed mid-frame")
    return data


def _read_frame(reader: _Reader) -> tuple[bool, int, bool, bytes]:
    """Return (fin, opcode, masked, unmasked payload) of the next client frame."""
    b1, b2 = _read_exact(reader, 2)
    length = b2 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(reader, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(reader, 8))
    masked = bool(b2 & 0x80)
    mask = _read_exact(reader, 4) if masked else b"\0\0\0\0"
    data = _read_exact(reader, length)
    unmasked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
    return bool(b1 & 0x80), b1 & 0x0F, masked, unmasked
