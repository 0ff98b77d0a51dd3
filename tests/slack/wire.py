"""HTTP/1.1 on a bare socket, for what urllib will not send: a head without its body, a chunked
body, a connection that never finishes its request (a slow client), and the answer's status line
read as it comes."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

# a request head cut off before its blank line: the server waits for the rest that never comes
HALF_HEAD = b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300\r\n"


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def head(url: str, headers: dict[str, str], method: str = "POST") -> bytes:
    """A request head with its blank line; the body, if any, is the caller's to send."""
    lines = [f"{method} {urlsplit(url).path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(conn: socket.socket, timeout: float = 10.0) -> int:
    """The status code of the answer on `conn`; 0 when the server closed without one."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def closed_within(conn: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `conn` (reading whatever it answered first), or None
    when it was still open after `seconds`."""
    start = time.monotonic()
    conn.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if not conn.recv(4096):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def half_open(url: str, count: int) -> list[socket.socket]:
    """`count` connections that each send part of a request head and then nothing."""
    conns = []
    for _ in range(count):
        conn = socket.create_connection(address(url), timeout=10)
        conn.sendall(HALF_HEAD)
        conns.append(conn)
    return conns


def trickled(url: str, every: float, seconds: float) -> float | None:
    """Send a request head a byte at a time, one every `every` seconds, never finishing it;
    seconds until the server closed the connection, or None when it was open after `seconds`."""
    start = time.monotonic()
    with socket.create_connection(address(url), timeout=10) as conn:
        conn.sendall(HALF_HEAD)
        while time.monotonic() - start < seconds:
            try:
                conn.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
            if closed_within(conn, every) is not None:
                return time.monotonic() - start
    return None


def chunked(url: str, headers: dict[str, str], chunks: int, size: int) -> int:
    """Send a chunked body of `chunks` chunks of `size` bytes (no Content-Length); the status
    the server answered, possibly before the body was all sent."""
    with socket.create_connection(address(url), timeout=10) as conn:
        conn.sendall(head(url, headers | {"Transfer-Encoding": "chunked"}))
        piece = f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"
        try:
            for _ in range(chunks):
                conn.sendall(piece)
            conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest: the answer is still readable
        return status_of(conn)
