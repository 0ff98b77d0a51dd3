"""Runs argv on cluster nodes over SSH (paramiko), with host keys always checked.

Why paramiko rather than the `ssh` binary: a pooled connection runs a command in ~45 ms where a
fresh OpenSSH process costs ~190 ms, and fan-out over 20 nodes stays in the hundreds of ms
(LAB-NOTES). Why so strict: the bot runs repairs as root on nodes, so a host key that is unknown
or changed is refused, never learned, and every wait has a deadline, because a frozen node must
not freeze the chat thread that asked about it.

Host keys are looked up under the node's name (or its ssh_config HostKeyAlias), as OpenSSH does
with HostKeyAlias, never under the address the Node object gives: whoever can patch a Node's
status could otherwise point the bot's root commands at another node whose key is valid for
that address. `[ssh] known_hosts_by_address` accepts an entry under the address when the name
has none (how keys added with plain `ssh-keyscan` are filed), for a known_hosts not yet moved.

Per-node settings come from `SshSettings.hosts` (`address`, `address:port`, `[v6]:port`), then
an ssh_config `Host` entry (HostName, User, Port, IdentityFile, HostKeyAlias), then the
settings' defaults; the address, if neither names one, comes from the injected `resolve` (the
node's InternalIP).

A command that misses its deadline raises `CommandTimeout` (carrying what it printed so far); it
never comes back as a `CommandResult`, so a caller cannot mistake a half-run repair for a result.
A non-zero exit code is a result, not an error. The timed-out command is abandoned, not killed:
without a terminal sshd only closes its pipes (and refuses the "signal" request for root logins),
so a step whose command can hang should bound it on the node, e.g. argv `["timeout", "5", ...]`.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self, cast

import paramiko

from flannel_bot.errors import (
    AuthenticationFailed,
    CommandTimeout,
    ExecutorError,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    NodeError,
    NodeUnreachable,
    NodeUnresolved,
)
from flannel_bot.executors.known_hosts import KnownHosts, read_known_hosts
from flannel_bot.executors.ssh_settings import SshSettings, parse_host
from flannel_bot.ports.nodes import CommandResult, checked_argv

log = logging.getLogger(__name__)

Resolver = Callable[[str], str]
ErrorCounter = Callable[[str], None]
Commands = Mapping[str, Sequence[Sequence[str]]] | tuple[Iterable[str], Sequence[str]]
FanOut = dict[str, list[CommandResult] | ExecutorError]

_CHUNK = 65536
# select() wakes on data and EOF. The watchdog's close() also closes the fd being selected on,
# which may not wake select(): the poll interval bounds how late a timeout can be noticed.
_POLL_S = 0.1
# run_many waits this much past its deadline so that nodes report their own, more precise error
# (each node's work has the same deadline) instead of a generic "no answer".
_COLLECT_GRACE_S = 0.25


def remote_command_line(argv: Sequence[str], *, sudo: bool) -> str:
    """The one place a remote command line is built.

    sshd hands the string to the login shell, so every argv word is quoted: `;`, `$(...)` and
    spaces in a word stay literal. `sudo -n` fails at once instead of waiting for a password.
    """
    words = ("sudo", "-n", "--", *argv) if sudo else tuple(argv)
    return shlex.join(words)


@dataclass(frozen=True)
class _Target:
    node: str
    address: str
    port: int
    user: str
    identities: tuple[Path, ...]
    key_name: str  # the node's name, or the HostKeyAlias ssh_config gives it

    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def address_name(self) -> str:
        """The name OpenSSH files the address's key under (what plain ssh-keyscan prints)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def keyscan(self, path: Path) -> str:
        """The command that files the server's key under `key_name`, to run once it is checked."""
        return (
            f"ssh-keyscan -p {self.port} {self.address} | sed 's/^[^ ]*/{self.key_name}/' >> {path}"
        )


@dataclass(frozen=True)
class _Connection:
    target: _Target
    transport: paramiko.Transport


class _CappedOutput:
    """Keeps the first `cap` bytes; the rest is still read, so the remote never blocks on us."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._parts: list[bytes] = []
        self._size = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        room = self._cap - self._size
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self._parts.append(data)
            self._size += len(data)

    def text(self) -> str:
        return b"".join(self._parts).decode("utf-8", errors="replace")


class _Watchdog:
    """Closes a channel at its deadline.

    paramiko's exec request waits for the server's reply without a timeout, so a sshd frozen
    mid-command would hold the caller forever; closing the channel wakes every wait on it.
    """

    def __init__(self, chan: paramiko.Channel, delay: float) -> None:
        self._chan = chan
        self._lock = threading.Lock()
        self._state = "running"
        self._timer = threading.Timer(max(delay, 0.0), self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    @property
    def fired(self) -> bool:
        with self._lock:
            return self._state == "fired"

    def _fire(self) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "fired"
        # the connection may have died under the command already: closing its channel then
        # raises in this timer thread, with nobody to tell; the command's reader sees the end
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self._chan.close()

    def stop(self) -> bool:
        """Returns True if the command finished before the watchdog fired."""
        with self._lock:
            if self._state == "running":
                self._state = "finished"
            in_time = self._state == "finished"
        self._timer.cancel()
        return in_time


class SshExecutor:
    """`NodeExecutor` over SSH: one pooled connection per node, host keys checked, deadlines kept.

    Thread-safe: `run` may be called from many threads; connections to different nodes are set
    up in parallel, and one node is connected to at most once at a time. `on_error`, if given, is
    called with the kind of every failure (`NodeUnreachable`, `HostKeyChanged`, `CommandTimeout`,
    ...) from any of those threads, e.g. to count it for `/metrics`.
    """

    def __init__(
        self,
        settings: SshSettings,
        resolve: Resolver | None = None,
        on_error: ErrorCounter | None = None,
    ) -> None:
        self.settings = settings
        self._resolve = resolve
        self._on_error = on_error
        self._ssh_config = (
            paramiko.SSHConfig.from_path(settings.ssh_config.expanduser())
            if settings.ssh_config is not None
            else None
        )
        self._hosts = {node: parse_host(value) for node, value in settings.hosts.items()}
        self._lock = threading.Lock()
        self._pool: dict[str, _Connection] = {}
        self._connecting: dict[str, threading.Lock] = {}
        self._keys: dict[Path, paramiko.PKey] = {}
        self._known: tuple[tuple[int, int], KnownHosts] | None = None
        self._opened = 0
        self._closed = False

    # -- public API -----------------------------------------------------------------------------

    @property
    def connections_opened(self) -> int:
        """SSH connections set up so far; with pooling, at most one per node unless one broke."""
        with self._lock:
            return self._opened

    def run(
        self,
        node: str,
        argv: Sequence[str],
        timeout: float | None = None,
        sudo: bool | None = None,
    ) -> CommandResult:
        """Runs argv on node; the whole call, connecting included, ends within `timeout`.

        Raises CommandTimeout past the deadline, NodeUnreachable, HostKeyUnknown/HostKeyChanged
        or AuthenticationFailed; a non-zero exit code is returned, not raised.
        """
        budget = self._budget(timeout)
        words = checked_argv(argv)
        try:
            return self._run(node, words, time.monotonic() + budget, self._sudo(sudo))
        except ExecutorError as exc:
            self._count(exc)
            raise

    def run_many(
        self, commands: Commands, timeout: float | None = None, *, sudo: bool | None = None
    ) -> FanOut:
        """Runs commands on many nodes at once, `max_workers` at a time, within one deadline.

        `commands` maps node -> list of argv (run in order on that node, stopping at the first
        error), or is a `(nodes, argv)` pair. Each node's entry is its results or the error that
        stopped it; a dead or frozen node costs at most the deadline, never the others' results.
        Returns within `timeout` plus a fraction of a second.
        """
        plan = _plan(commands)
        budget = self._budget(timeout)
        deadline = time.monotonic() + budget
        use_sudo = self._sudo(sudo)
        if not plan:
            return {}
        workers = min(self.settings.max_workers, len(plan))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssh-fan-out")
        try:
            futures = {
                node: pool.submit(self._run_sequence, node, argvs, deadline, use_sudo)
                for node, argvs in plan.items()
            }
            wait(futures.values(), timeout=max(deadline - time.monotonic(), 0) + _COLLECT_GRACE_S)
        finally:
            # Stragglers end on their own deadline; joining them here would let one node hold
            # up every other node's answer.
            pool.shutdown(wait=False, cancel_futures=True)
        results: FanOut = {}
        for node, future in futures.items():
            address = self._address_hint(node)
            where = f" ({address})" if address else ""
            if future.cancelled():
                results[node] = CommandTimeout(
                    f"node {node}{where}: not started within the {budget:g}s deadline "
                    f"({workers} nodes at a time)",
                    node=node,
                    address=address,
                )
            elif not future.done():
                results[node] = CommandTimeout(
                    f"node {node}{where} did not answer within {budget:g}s",
                    node=node,
                    address=address,
                )
            else:
                # Anything but an ExecutorError is a bug: let it crash loudly.
                results[node] = future.result()
            if isinstance(results[node], ExecutorError):
                self._count(results[node])
        return results

    def run_each(
        self, commands: Commands, timeout: float | None = None, *, sudo: bool | None = None
    ) -> Iterator[tuple[str, list[CommandResult] | ExecutorError]]:
        """`run_many`, each node's entry given as soon as the node has answered (in the order
        they answer, the late ones' timeouts last), and not kept here once given: a caller that
        reduces each node's answers as they come never holds every node's output at once."""
        plan = _plan(commands)
        budget = self._budget(timeout)
        deadline = time.monotonic() + budget
        use_sudo = self._sudo(sudo)
        if not plan:
            return
        workers = min(self.settings.max_workers, len(plan))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssh-fan-out")
        try:
            node_of = {
                pool.submit(self._run_sequence, node, argvs, deadline, use_sudo): node
                for node, argvs in plan.items()
            }
            pending = set(node_of)
            while pending:
                left = max(deadline - time.monotonic(), 0) + _COLLECT_GRACE_S
                done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                if not done:
                    break
                for future in done:
                    if future.cancelled():
                        continue  # reported with the late ones below
                    node = node_of.pop(future)
                    # Anything but an ExecutorError is a bug: let it crash loudly.
                    result = future.result()
                    if isinstance(result, ExecutorError):
                        self._count(result)
                    yield node, result
            late = list(node_of.items())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        for future, node in late:
            address = self._address_hint(node)
            where = f" ({address})" if address else ""
            if future.cancelled():
                error = CommandTimeout(
                    f"node {node}{where}: not started within the {budget:g}s deadline "
                    f"({workers} nodes at a time)",
                    node=node,
                    address=address,
                )
            else:
                error = CommandTimeout(
                    f"node {node}{where} did not answer within {budget:g}s",
                    node=node,
                    address=address,
                )
            self._count(error)
            yield node, error

    def close(self) -> None:
        """Closes every pooled connection; later calls raise ExecutorError."""
        with self._lock:
            self._closed = True
            connections = list(self._pool.values())
            self._pool.clear()
        for conn in connections:
            conn.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------------------

    def _count(self, exc: object) -> None:
        if self._on_error is not None:
            self._on_error(type(exc).__name__)

    def _budget(self, timeout: float | None) -> float:
        budget = self.settings.command_timeout if timeout is None else timeout
        if not budget > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        return budget

    def _sudo(self, sudo: bool | None) -> bool:
        return self.settings.sudo if sudo is None else sudo

    def _run_sequence(
        self, node: str, argvs: Sequence[tuple[str, ...]], deadline: float, sudo: bool
    ) -> list[CommandResult] | ExecutorError:
        results = []
        for argv in argvs:
            try:
                results.append(self._run(node, argv, deadline, sudo))
            except ExecutorError as exc:
                return exc
        return results

    def _run(self, node: str, argv: tuple[str, ...], deadline: float, sudo: bool) -> CommandResult:
        line = remote_command_line(argv, sudo=sudo)
        conn, chan = self._open_session(node, line, deadline)
        target = conn.target
        watchdog = _Watchdog(chan, deadline - time.monotonic())
        stdout = _CappedOutput(self.settings.output_cap_bytes)
        stderr = _CappedOutput(self.settings.output_cap_bytes)
        started = time.monotonic()
        watchdog.start()
        try:
            try:
                chan.exec_command(line)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not watchdog.fired and conn.transport.is_active():
                    raise NodeError(
                        f"node {node} ({target.where}) refused to run `{line}`",
                        node=node,
                        address=target.where,
                    ) from exc
                if not watchdog.fired:
                    self._lost(conn, line, exc, sent=True)
            else:
                _collect(chan, stdout, stderr)
            exit_code = chan.recv_exit_status()
        finally:
            in_time = watchdog.stop()
            chan.close()
        duration = time.monotonic() - started
        if not in_time:
            # The connection is suspect (the node may be frozen) and holds a session for the
            # abandoned command, counted against the server's MaxSessions: start afresh.
            self._drop(conn)
            raise CommandTimeout(
                f"`{line}` on node {node} ({target.where}) did not finish within its deadline "
                f"(ran {duration:.1f}s); abandoned it and closed the connection",
                node=node,
                address=target.where,
                stdout=stdout.text(),
                stderr=stderr.text(),
            )
        if exit_code == -1 and not conn.transport.is_active():
            self._lost(conn, line, conn.transport.get_exception(), sent=True)
        # -1 with a live connection: killed by a signal (sshd then sends no exit status).
        return CommandResult(
            node=node,
            argv=argv,
            exit_code=exit_code,
            stdout=stdout.text(),
            stderr=stderr.text(),
            duration_s=duration,
            truncated=stdout.truncated or stderr.truncated,
        )

    def _open_session(
        self, node: str, line: str, deadline: float
    ) -> tuple[_Connection, paramiko.Channel]:
        """A fresh channel on the node's pooled connection, reconnecting once if it broke.

        Retrying is safe only here: nothing has been asked to run yet.
        """
        conn = self._connection(node, deadline)
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_passed(conn.target, line)
            try:
                return conn, conn.transport.open_session(timeout=remaining)
            except paramiko.ChannelException as exc:
                # e.g. MaxSessions reached on this connection: a new one starts with none.
                self._drop(conn)
                if attempt == 2:
                    raise NodeError(
                        f"node {node} ({conn.target.where}) refused a session for `{line}`: "
                        f"{exc.text or exc}",
                        node=node,
                        address=conn.target.where,
                    ) from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                alive = conn.transport.is_active()
                self._drop(conn)
                if alive:  # the server holds the TCP connection but does not answer
                    raise CommandTimeout(
                        f"node {node} ({conn.target.where}) did not open a session for `{line}` "
                        f"within its deadline; closed the connection",
                        node=node,
                        address=conn.target.where,
                    ) from exc
                if attempt == 2:
                    self._lost(conn, line, exc, sent=False)
            log.info("connection to node %s failed to open a session; reconnecting", node)
            conn = self._connection(node, deadline)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(
        self, conn: _Connection, line: str, exc: BaseException | None, *, sent: bool
    ) -> NoReturn:
        target = conn.target
        self._drop(conn)
        raise NodeUnreachable(
            f"lost the connection to node {target.node} ({target.where}) at `{line}`"
            f"{'; it may have run' if sent else ''}: {exc or 'connection closed'}",
            node=target.node,
            address=target.where,
        ) from exc

    @staticmethod
    def _deadline_passed(target: _Target, line: str) -> CommandTimeout:
        return CommandTimeout(
            f"deadline passed before `{line}` could start on node {target.node} ({target.where})",
            node=target.node,
            address=target.where,
        )

    # -- connections ----------------------------------------------------------------------------

    def _connection(self, node: str, deadline: float) -> _Connection:
        with self._lock:
            self._check_open()
            conn = self._pool.get(node)
            if conn is not None and conn.transport.is_active():
                return conn
            gate = self._connecting.setdefault(node, threading.Lock())
        if not gate.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise NodeUnreachable(
                f"node {node}: still connecting to it for another call when the deadline passed",
                node=node,
            )
        try:
            with self._lock:
                self._check_open()
                conn = self._pool.get(node)
            if conn is not None:
                if conn.transport.is_active():  # another call connected while we waited
                    return conn
                self._drop(conn)
            target = self._target(node)
            transport = self._connect(target, deadline)
            conn = _Connection(target, transport)
            with self._lock:
                if self._closed:
                    transport.close()
                    self._check_open()
                self._pool[node] = conn
                self._opened += 1
            log.info("connected to node %s at %s as %s", node, target.where, target.user)
            return conn
        finally:
            gate.release()

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutorError("the SSH executor is closed")

    def _drop(self, conn: _Connection) -> None:
        with self._lock:
            if self._pool.get(conn.target.node) is conn:
                del self._pool[conn.target.node]
        conn.transport.close()

    def _address_hint(self, node: str) -> str:
        with self._lock:
            conn = self._pool.get(node)
        return conn.target.where if conn is not None else ""

    def _target(self, node: str) -> _Target:
        s = self.settings
        config = self._ssh_config.lookup(node) if self._ssh_config is not None else {}
        user = config.get("user", s.user)
        try:
            port = int(config.get("port", s.port))
        except ValueError:
            raise ExecutorError(f"ssh_config gives node {node} a bad Port") from None
        raw_identities = cast(object, config.get("identityfile", []))
        identities = [Path(p).expanduser() for p in _as_list(raw_identities)]
        if s.private_key is not None:
            identities.append(s.private_key.expanduser())
        if node in self._hosts:
            address, host_port = self._hosts[node]
            port = host_port or port
        elif config.get("hostname", node) != node:
            address = config["hostname"]
        else:
            address = self._resolve_address(node)
        key_name = str(config.get("hostkeyalias") or node)
        return _Target(node, address, port, user, tuple(dict.fromkeys(identities)), key_name)

    def _resolve_address(self, node: str) -> str:
        how = "it is not in ssh hosts and ssh_config has no HostName for it"
        if self._resolve is None:
            raise NodeUnresolved(f"no address for node {node}: {how}", node=node)
        try:
            address = self._resolve(node)
        except ExecutorError as exc:
            raise NodeUnresolved(
                f"no address for node {node}: {how}, and the resolver failed: {exc}", node=node
            ) from exc
        if not address:
            raise NodeUnresolved(
                f"no address for node {node}: {how}, and the resolver found none", node=node
            )
        return address

    def _connect(self, target: _Target, deadline: float) -> paramiko.Transport:
        budget = min(self.settings.connect_timeout, deadline - time.monotonic())
        if budget <= 0:
            raise NodeUnreachable(
                f"deadline passed before connecting to node {target.node} ({target.where})",
                node=target.node,
                address=target.where,
            )
        until = time.monotonic() + budget
        try:
            sock = socket.create_connection((target.address, target.port), timeout=budget)
        except OSError as exc:
            raise NodeUnreachable(
                f"cannot connect to node {target.node} at {target.where}: "
                f"{'no answer' if isinstance(exc, TimeoutError) else exc.strerror or exc}",
                node=target.node,
                address=target.where,
            ) from exc
        # Nagle's algorithm stalls the handshake's small packets ~40 ms each (LAB-NOTES).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            transport = paramiko.Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            self._handshake(target, transport, until)
            self._authenticate(target, transport, until)
        except BaseException:
            transport.close()
            raise
        return transport

    def _handshake(self, target: _Target, transport: paramiko.Transport, until: float) -> None:
        known_hosts = self._known_hosts()
        _, known = self._expected_keys(target, known_hosts)
        if known:
            # Ask for the key type known_hosts holds, or an RSA-only entry would look "changed".
            options = transport.get_security_options()
            offered = list(options.key_types)
            wanted: list[str] = []
            for key_type in known:
                rsa = key_type == "ssh-rsa"
                wanted += ["rsa-sha2-512", "rsa-sha2-256", key_type] if rsa else [key_type]
            wanted = [t for t in dict.fromkeys(wanted) if t in offered]
            options.key_types = wanted + [t for t in offered if t not in wanted]
        # Bound the transport thread's own waits too, so it does not outlive a refused node.
        transport.banner_timeout = transport.handshake_timeout = until - time.monotonic()
        done = threading.Event()
        transport.start_client(event=done)
        if not done.wait(max(until - time.monotonic(), 0)):
            raise NodeUnreachable(
                f"node {target.node} ({target.where}) accepted TCP but did not finish the SSH "
                f"handshake within {self.settings.connect_timeout:g}s or the deadline "
                f"(sshd hung or overloaded?)",
                node=target.node,
                address=target.where,
            )
        if not transport.is_active():
            raise NodeUnreachable(
                f"SSH handshake with node {target.node} ({target.where}) failed: "
                f"{transport.get_exception() or 'connection closed'}",
                node=target.node,
                address=target.where,
            )
        self._verify_host_key(target, transport.get_remote_server_key(), known_hosts)

    def _expected_keys(
        self, target: _Target, known_hosts: KnownHosts
    ) -> tuple[str, dict[str, paramiko.PKey]]:
        """The name whose keys the node must present, and those keys: the node's name (or its
        HostKeyAlias); the address only with known_hosts_by_address and nothing under the name."""
        named = known_hosts.lookup(target.key_name)
        if named or not self.settings.known_hosts_by_address:
            return target.key_name, named
        return target.address_name, known_hosts.lookup(target.address_name)

    def _verify_host_key(
        self, target: _Target, key: paramiko.PKey, known_hosts: KnownHosts
    ) -> None:
        path = known_hosts.path
        presented = f"{key.get_name()} {key.fingerprint}"
        names = (target.node, target.key_name, target.address_name, target.address)
        revoked = known_hosts.revoked_line(key, names)
        if revoked is not None:
            raise HostKeyRevoked(
                f"refusing node {target.node} at {target.where}: its host key {presented} is "
                f"marked @revoked in {path} (line {revoked}), so it is never accepted. Give the "
                f"node a new host key and list that under `{target.key_name}`",
                node=target.node,
                address=target.where,
            )
        name, known = self._expected_keys(target, known_hosts)
        listed = known.get(key.get_name())
        if listed is not None and listed.asbytes() == key.asbytes():
            return
        if not known:
            raise HostKeyUnknown(
                self._unknown(target, presented, known_hosts),
                node=target.node,
                address=target.where,
            )
        expected = ", ".join(f"{t} {k.fingerprint}" for t, k in known.items())
        raise HostKeyChanged(
            f"HOST KEY CHANGED for node {target.node} at {target.where}: {path} lists "
            f"{expected} under `{name}` but the server presented {presented}. The node may have "
            f"been reinstalled, its Node address may now lead to another machine, or someone is "
            f"intercepting the connection; check the key on the node, then replace the entry: "
            f"ssh-keygen -R '{name}' -f {path} && {target.keyscan(path)}",
            node=target.node,
            address=target.where,
        )

    def _unknown(self, target: _Target, presented: str, known_hosts: KnownHosts) -> str:
        path = known_hosts.path
        missing = "" if path.exists() else " (the file does not exist)"
        under = f"`{target.key_name}`"
        if self.settings.known_hosts_by_address:
            under += f" or its address `{target.address_name}`"
        elif known_hosts.lookup(target.address_name):
            under += (
                f"; it has one under the address `{target.address_name}`, which flannel-bot "
                f"does not trust by default (the address comes from the Node object): rename "
                f"that entry to `{target.key_name}` once you know it is {target.node}'s, or set "
                f"[ssh] known_hosts_by_address = true"
            )
        return (
            f"refusing node {target.node} at {target.where}: its host key {presented} is not "
            f"in {path}{missing}, which lists no key under {under}. If that is the node's key "
            f"(compare `ssh-keygen -lf` of its host key on the node), add it under the node's "
            f"name with: {target.keyscan(path)}"
        )

    def _authenticate(self, target: _Target, transport: paramiko.Transport, until: float) -> None:
        if not target.identities:
            raise AuthenticationFailed(
                f"no private key for node {target.node}: set the ssh private_key setting or an "
                f"IdentityFile in ssh_config",
                node=target.node,
                address=target.where,
            )
        refusal: Exception | None = None
        for path in target.identities:
            key = self._private_key(path, target)
            transport.auth_timeout = max(until - time.monotonic(), 0.001)
            try:
                transport.auth_publickey(target.user, key)
            except paramiko.AuthenticationException as exc:
                if time.monotonic() >= until:
                    raise NodeUnreachable(
                        f"node {target.node} ({target.where}) did not finish the login in time",
                        node=target.node,
                        address=target.where,
                    ) from exc
                refusal = exc
                continue
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise NodeUnreachable(
                    f"login to node {target.node} ({target.where}) failed: {exc}",
                    node=target.node,
                    address=target.where,
                ) from exc
            if transport.is_authenticated():
                return
        keys = ", ".join(str(p) for p in target.identities)
        raise AuthenticationFailed(
            f"node {target.node} ({target.where}) refused login as {target.user} with {keys}: "
            f"{refusal or 'more authentication required'}",
            node=target.node,
            address=target.where,
        )

    def _private_key(self, path: Path, target: _Target) -> paramiko.PKey:
        with self._lock:
            key = self._keys.get(path)
        if key is not None:
            return key
        try:
            key = paramiko.PKey.from_path(path)
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise AuthenticationFailed(
                f"cannot load private key {path} for node {target.node}: {exc}",
                node=target.node,
                address=target.where,
            ) from exc
        with self._lock:
            self._keys[path] = key
        return key

    def _known_hosts(self) -> KnownHosts:
        """known_hosts as of now: re-read when the file changes, so added keys count at once."""
        path = self.settings.known_hosts.expanduser()
        try:
            stat = path.stat()
        except FileNotFoundError:
            return KnownHosts(path, paramiko.HostKeys())
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._known is not None and self._known[0] == stamp:
                return self._known[1]
        try:
            known_hosts = read_known_hosts(path)
        except OSError as exc:
            raise ExecutorError(f"cannot read known_hosts {path}: {exc}") from exc
        with self._lock:
            self._known = (stamp, known_hosts)
        return known_hosts


def _collect(chan: paramiko.Channel, stdout: _CappedOutput, stderr: _CappedOutput) -> None:
    """Reads both streams until EOF, interleaved: one full stream must not stall the other."""
    fd = chan.fileno()
    while True:
        if chan.recv_ready():
            stdout.feed(chan.recv(_CHUNK))
        elif chan.recv_stderr_ready():
            stderr.feed(chan.recv_stderr(_CHUNK))
        elif chan.eof_received or chan.closed:
            return
        else:
            try:
                select.select([fd], [], [], _POLL_S)
            except (OSError, ValueError):  # closed by the watchdog meanwhile
                continue


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _plan(commands: Commands) -> dict[str, list[tuple[str, ...]]]:
    if isinstance(commands, Mapping):
        plan = {}
        for node, argvs in commands.items():
            if isinstance(argvs, str) or any(isinstance(a, str) for a in argvs):
                raise TypeError(
                    f"commands[{node!r}] must be a list of argv lists, e.g. [['ip', 'link']]"
                )
            plan[node] = [checked_argv(a) for a in argvs]
        return plan
    nodes, argv = commands
    if isinstance(nodes, str):
        raise TypeError(f"nodes must be a list of node names, not the string {nodes!r}")
    words = checked_argv(argv)
    return {node: [words] for node in nodes}
