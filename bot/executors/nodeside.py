"""`flannel-bot node`: the program inside a node-exec pod (bot.executors.kube.nodepods).

Why a program of our own rather than a shell in the pod: the bot hands it argv lists as JSON and
it runs each with no shell, as the SSH executor's quoting guarantees over SSH, so a word of a
command never becomes shell text on the node. Why nsenter: the pod is privileged with the host's
PID namespace, so entering PID 1's (or `FLANNEL_BOT_HOST_PID`'s, the lab node's holder process)
mount, UTS, IPC, network and PID namespaces runs the node's own binaries on the node's own files,
as `kubectl debug node` plus `chroot /host` would.

It prints one JSON object per command on stdout, in order, then `{"done": true, "commands": N}`;
the bot reads that back from the container log. A command's own failure is its exit code; the
program exits 0 when it ran what it was given. Every command is bounded by what remains of
`--timeout` (one deadline for the pod's work, as `run_many` has one over SSH); a command that
misses it is killed with its process group, reported with `"timed_out": true`, and ends the run.
Output is capped per stream (`--output-cap`, the SSH executor's cap by default); the rest is read
and dropped so the command never blocks on a full pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, TextIO

from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.ports.peer_digest import KEYS, digest_table

HOST_PID_ENV = "FLANNEL_BOT_HOST_PID"
NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid")
TIMEOUT_EXIT = 124  # what coreutils' `timeout` exits with
_CHUNK = 65536
# a table digested on the node is read up to this, whatever --output-cap says (it is not sent)
DIGEST_CAP = 64 * 1024 * 1024


class CommandsRefused(ValueError):
    """--commands is not a JSON list of non-empty argv lists of strings without NUL."""


def _json_option(flag: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandsRefused(f"{flag} is not valid JSON: {exc}") from None


def parse_commands(text: str) -> list[list[str]]:
    """The argv lists `--commands` carries, checked before anything runs."""
    value = _json_option("--commands", text)
    if not isinstance(value, list):
        raise CommandsRefused("--commands must be a JSON list of argv lists")
    out = []
    for i, argv in enumerate(value):
        if isinstance(argv, str):
            raise CommandsRefused(f"command {i} is the string {argv!r}; argv must be a list")
        if not isinstance(argv, list) or not argv:
            raise CommandsRefused(f"command {i} must be a non-empty list of strings")
        if not all(isinstance(w, str) for w in argv):
            raise CommandsRefused(f"command {i}: every argv word must be a string: {argv!r}")
        if any("\0" in w for w in argv):
            raise CommandsRefused(f"command {i}: argv words cannot contain NUL bytes")
        out.append(argv)
    return out


def parse_digests(text: str, commands: int) -> dict[int, str]:
    """`--digest`: command index -> the peer table (`peer_digest.KEYS`) it prints."""
    value = _json_option("--digest", text)
    if not isinstance(value, dict):
        raise CommandsRefused("--digest must be a JSON object of command index -> table id")
    out = {}
    for index, table in value.items():
        if not (isinstance(index, str) and index.isdigit() and int(index) < commands):
            raise CommandsRefused(f"--digest: {index!r} is not the index of a command")
        if table not in KEYS:
            raise CommandsRefused(f"--digest: {table!r} is not one of {', '.join(KEYS)}")
        out[int(index)] = str(table)
    return out


def digested(line: dict[str, Any], table: str, cap: int) -> dict[str, Any]:
    """A result line with its table replaced by the table's digest; as it was (capped) when
    the command failed or did not print a JSON table."""
    summary = None
    if line["exit_code"] == 0 and not line["truncated"]:
        summary = digest_table(table, line["stdout"])
    if summary is None or len(summary.others.encode()) > cap:
        data = line["stdout"].encode()
        if len(data) > cap:
            line["stdout"] = data[:cap].decode("utf-8", errors="replace")
            line["truncated"] = True
        return line
    return {**line, "stdout": summary.others, "peer_digest": summary.as_json()}


def nsenter_argv(host_pid: int, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` in the namespaces of process `host_pid`."""
    return ["nsenter", "--target", str(host_pid), *NAMESPACES, "--", *argv]


class _Capped:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read(_CHUNK):
            room = self.cap - len(self.data)
            if len(chunk) > room:
                self.truncated = True
                chunk = chunk[: max(room, 0)]
            self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def run_one(argv: Sequence[str], host_pid: int, timeout: float, cap: int) -> dict[str, Any]:
    """Runs one argv in the host's namespaces; the result line the bot reads back."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            nsenter_argv(host_pid, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills nsenter's child too
        )
    except OSError as exc:
        return {
            "argv": list(argv),
            "exit_code": 127,
            "stdout": "",
            "stderr": f"flannel-bot node: cannot start nsenter: {exc}",
            "duration_s": 0.0,
            "truncated": False,
        }
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capped(cap), _Capped(cap)
    readers = [
        threading.Thread(target=out.drain, args=(proc.stdout,), daemon=True),
        threading.Thread(target=err.drain, args=(proc.stderr,), daemon=True),
    ]
    for t in readers:
        t.start()
    timed_out = False
    try:
        exit_code = proc.wait(timeout=max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        exit_code = TIMEOUT_EXIT
    for t in readers:
        # a grandchild that escaped the group may hold the pipe open: do not wait for it forever
        t.join(timeout=1.0)
    line: dict[str, Any] = {
        "argv": list(argv),
        "exit_code": exit_code,
        "stdout": out.text(),
        "stderr": err.text(),
        "duration_s": round(time.monotonic() - started, 3),
        "truncated": out.truncated or err.truncated,
    }
    if timed_out:
        line["timed_out"] = True
    return line


def host_pid_of(given: int, env: Mapping[str, str]) -> int:
    override = env.get(HOST_PID_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise CommandsRefused(f"{HOST_PID_ENV}={override!r} is not a process id")
        return int(override)
    return given


def main(
    args: Sequence[str], env: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    """Runs the commands and prints their result lines; 2 on a refused invocation."""
    stream = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="flannel-bot node",
        exit_on_error=False,
        description="Run argv lists in a host's namespaces and print one JSON line per command, "
        "then a done line: the entry point of the node-exec pods the bot creates with "
        '[nodes] access = "pod". Not meant to be run by hand.',
    )
    parser.add_argument(
        "--host-pid",
        type=int,
        default=1,
        help="the process whose namespaces are the host's (default 1; FLANNEL_BOT_HOST_PID wins)",
    )
    parser.add_argument(
        "--timeout", type=float, required=True, help="seconds for all the commands together"
    )
    parser.add_argument(
        "--commands", required=True, help='a JSON list of argv lists, e.g. [["ip", "-j", "route"]]'
    )
    parser.add_argument(
        "--output-cap",
        type=int,
        default=SshSettings().output_cap_bytes,
        help="bytes kept of each command's stdout and of its stderr",
    )
    parser.add_argument(
        "--digest",
        default="{}",
        help='a JSON object of command index -> VXLAN peer table id ({"2": "ip-route"}): that '
        "command's table is printed as its digest (bot.ports.peer_digest), not whole",
    )
    try:
        ns = parser.parse_args(list(args))
        commands = parse_commands(ns.commands)
        digests = parse_digests(ns.digest, len(commands))
        host_pid = host_pid_of(ns.host_pid, os.environ if env is None else env)
        if not ns.timeout > 0:
            raise CommandsRefused(f"--timeout must be positive, got {ns.timeout}")
        if ns.output_cap < 1:
            raise CommandsRefused(f"--output-cap must be at least 1, got {ns.output_cap}")
    except (argparse.ArgumentError, CommandsRefused) as exc:
        print(f"flannel-bot node: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + ns.timeout
    ran = 0
    for i, argv in enumerate(commands):
        table = digests.get(i)
        # a digested table is not sent, so it is not capped as what is sent is
        cap = max(ns.output_cap, DIGEST_CAP) if table else ns.output_cap
        line = run_one(argv, host_pid, deadline - time.monotonic(), cap)
        if table:
            line = digested(line, table, ns.output_cap)
        ran += 1
        print(json.dumps(line), file=stream, flush=True)
        if line.get("timed_out"):
            break
    print(json.dumps({"done": True, "commands": ran}), file=stream, flush=True)
    return 0
