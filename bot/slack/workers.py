"""Heavy commands in worker processes, so that they cannot starve the acks.

A diagnose over a big cluster or support bundle, `audit verify` and an audit report or export
are CPU-bound for seconds. In a thread of `serve` they hold the GIL, and the listener threads
that must ack Slack's requests within 3 seconds wait for it: beside two 1,000-node diagnoses
the ack's p99 went from about 50 ms to about a second (bench/slack_ack.py --background).

Here they run in a few worker processes (`[serve] workers`, default 2) started by
multiprocessing's forkserver: never forked from `serve` itself, whose other threads may hold a
lock the child would inherit held. Each worker builds its own App from the same settings and
runs the same `Service.handle` the serve process would, on a SQLite connection of its own to the
same file. That keeps the audit chain and its meaning exactly as in one process: every write
takes SQLite's write lock first (BEGIN IMMEDIATE) and reads the chain head inside that
transaction, which is how the threads of `serve` already share the file, each on its own
connection; and the command is recorded, acted on and answered by the one code path, in the
same order. (Returning results for the serve process to record would have split
`Service.handle` in two and changed when each event is written.) The events a worker committed
come back with its reply and go to the serve process's listeners (metrics, progress), which so
see each event once, as if recorded there. A worker follows the serve process's clock.

At most `workers` heavy commands run at once, and up to `[serve] queue` more wait for a worker
(the requester is told that theirs is queued); beyond that one is refused. A worker that dies
during a command (killed, out of memory) makes that command's reply an error, recorded as a
failed command, and a new worker takes the next one. On shutdown the waiting commands are
cancelled (each requester is told) and the running ones may finish until a deadline, after
which their workers are stopped.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from flannel_bot.errors import UserError
from flannel_bot.ports.clock import Clock, SystemClock
from flannel_bot.ports.store import Event, Requester
from flannel_bot.render import Renderer
from flannel_bot.runs.policy import Policy
from flannel_bot.service import commands as c
from flannel_bot.service.handler import Reply
from flannel_bot.settings import Settings
from flannel_bot.slack.messages import Messages

log = logging.getLogger(__name__)
STOP_SECONDS = 5.0  # a worker asked to stop at shutdown has this long before it is killed
# workers yield the CPU to serve: where cores are few, an ack waiting for one would wait out
# a worker's time slice
WORKER_NICE = 19


def is_heavy(command: c.Command) -> bool:
    """Commands that may keep a core busy for seconds: any diagnose, `audit verify`, and audit
    reports and exports. Everything else is a few reads and writes, answered in `serve`."""
    return isinstance(command, c.Diagnose | c.AuditReport) or command == c.Audit("verify")


class QueueFull(UserError):
    """Every worker is busy and the queue of heavy commands is full: try again shortly."""


@dataclass(frozen=True)
class Job:
    """One heavy command as `Service.handle` takes it, with what the worker must share with the
    serve process: the policy (Slack user groups fold into it) and the clock (`clock_offset`
    from the system clock; None: the system clock itself)."""

    text: str
    who: Requester
    command: c.Command
    policy: Policy
    mention: str = ""  # how the reply names the requester
    clock_offset: timedelta | None = None


@dataclass(frozen=True)
class Outcome:
    """The reply, the pid of the process that ran the command (0: none did), and the events
    it committed. What takes CPU to render is rendered in the worker: a report into the reply's
    `content`, and a message for the thread into `rendered` (Messages.answer), the reply's data
    then left out: a 1,000-node diagnose is a megabyte of it."""

    reply: Reply
    pid: int
    events: tuple[Event, ...] = ()
    died: bool = False  # the worker stopped before it answered
    rendered: tuple[dict[str, Any], str | None] | None = None


Done = Callable[[Outcome], None]


def _error(message: str, error_type: str) -> Reply:
    return Reply("error", {"message": message, "usage": None, "error_type": error_type}, ok=False)


@dataclass
class _Pending:
    job: Job
    done: Done


class WorkerPool:
    """`workers` worker processes, each fed by a thread of its own from one queue."""

    def __init__(
        self, settings: Settings, workers: int, waiting: int, start_method: str = "forkserver"
    ) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.workers = workers
        self.waiting = waiting
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":  # each worker forks with this module already imported
            context.set_forkserver_preload([__name__])
        self._jobs: queue.Queue[_Pending | None] = queue.Queue()
        self._lock = threading.Lock()
        self._outstanding = 0  # running and waiting
        self._closed = False
        self._procs = [_Worker(context, settings) for _ in range(workers)]
        # which worker process ran each command, newest last (operators' logs, and the tests)
        self.ran: deque[tuple[str, int]] = deque(maxlen=1000)
        self._threads = [
            threading.Thread(target=self._feed, args=(w,), name=f"heavy-{i}", daemon=True)
            for i, w in enumerate(self._procs)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job, done: Done) -> int:
        """Run `job` in a worker, then call `done` with its outcome (on a thread of the pool).
        Returns 0 when a worker takes it now, else its place in the queue; QueueFull when
        `waiting` commands wait already, or the pool is shutting down."""
        with self._lock:
            if self._closed:
                raise QueueFull("the bot is shutting down; ask again in a minute")
            queued = max(self._outstanding - self.workers, 0)
            if self._outstanding >= self.workers and queued >= self.waiting:
                raise QueueFull(
                    f"the bot is busy: {self.workers} heavy commands (diagnose, audit verify, "
                    f"audit reports) are running and {queued} are waiting; try again in a minute"
                )
            self._outstanding += 1
            self._jobs.put(_Pending(job, done))
            return queued + 1 if self._outstanding > self.workers else 0

    def start(self) -> None:
        """Start every worker now (`serve` does, so that the first heavy command does not wait
        for one to start); otherwise each starts with its first command."""
        for worker in self._procs:
            worker.ensure()

    def pids(self) -> list[int]:
        """The worker processes alive now."""
        return [w.pid for w in self._procs if w.pid]

    def _feed(self, worker: _Worker) -> None:
        while True:
            pending = self._jobs.get()
            if pending is None:
                return
            outcome = worker.run(pending.job)
            self.ran.append((type(pending.job.command).__name__, outcome.pid))
            with self._lock:
                self._outstanding -= 1
            self._tell(pending, outcome)

    @staticmethod
    def _tell(pending: _Pending, outcome: Outcome) -> None:
        try:
            pending.done(outcome)
        except Exception:  # the requester has their ack; the log gets the rest
            log.exception("answering a heavy command failed")

    def shutdown(self, timeout: float = 60.0) -> None:
        """Cancel the commands still waiting (each is told), let the running ones finish for up
        to `timeout` seconds, then stop the workers (a command still running gets an error)."""
        with self._lock:
            self._closed = True
            cancelled: list[_Pending] = []
            while True:
                try:
                    pending = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if pending is not None:
                    cancelled.append(pending)
                    self._outstanding -= 1
            for _ in self._threads:
                self._jobs.put(None)
        for pending in cancelled:
            message = "the bot is shutting down, so this command was not started; ask again"
            self._tell(pending, Outcome(_error(message, "Cancelled"), 0))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        for worker in self._procs:
            worker.stop()
        for thread in self._threads:
            thread.join()


class _Worker:
    """One worker process, started when first needed and again after it died."""

    def __init__(self, context: Any, settings: Settings) -> None:
        self._context = context
        self._settings = settings
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._stopping = False
        self._guard = threading.Lock()

    @property
    def pid(self) -> int:
        process = self._process
        return int(process.pid or 0) if process is not None and process.is_alive() else 0

    def _start(self) -> tuple[BaseProcess, Connection]:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=serve_jobs, args=(theirs, self._settings), name="flannel-bot-worker"
        )
        process.daemon = True  # never outlives serve
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        return process, ours

    def ensure(self) -> tuple[BaseProcess, Connection] | None:
        """The live worker process, started if need be; None once stopping."""
        with self._guard:
            if self._stopping:
                return None
            process, conn = self._process, self._conn
            if process is None or conn is None or not process.is_alive():
                self._discard()
                process, conn = self._start()
            return process, conn

    def run(self, job: Job) -> Outcome:
        started = self.ensure()
        if started is None:
            return Outcome(_error("the bot is shutting down; ask again", "Cancelled"), 0)
        process, conn = started
        pid = int(process.pid or 0)
        try:
            conn.send(job)
            ready = wait([conn, process.sentinel])
            if conn in ready:
                outcome = conn.recv()
                assert isinstance(outcome, Outcome)
                return outcome
        except (EOFError, OSError):
            pass  # the worker went away: below
        process.join(STOP_SECONDS)
        code = process.exitcode
        with self._guard:
            self._discard()
        how = f"exit code {code}" if code is None or code >= 0 else signal.Signals(-code).name
        log.error("worker %d died running `%s` (%s)", pid, job.text, how)
        message = (
            f"the worker process running this command stopped before it answered ({how}); "
            "what it recorded before that is in the audit log. Try again: a new worker takes "
            "the next command"
        )
        if self._stopping:
            message = "the bot shut down while this command ran; ask again"
        return Outcome(_error(message, "WorkerDied"), pid, died=True)

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(STOP_SECONDS)
        self._process = self._conn = None

    def stop(self) -> None:
        """Ask the worker to end (it does after the command it runs); kill it if it has not
        within STOP_SECONDS. A command it was running gets its error from `run`."""
        self._stopping = True
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send(None)
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join(STOP_SECONDS)


class _JobClock:
    """The serve process's clock, as each job says it is: the system clock shifted by the
    job's offset (a test's fake clock), or the system clock itself."""

    offset: timedelta | None = None

    def now(self) -> datetime:
        now = datetime.now(UTC)
        return now if self.offset is None else now + self.offset

    def sleep(self, seconds: float) -> None:
        threading.Event().wait(seconds)


def serve_jobs(conn: Connection, settings: Settings) -> None:
    """A worker process: jobs from `conn` until None (or the serve process is gone), each
    answered with its Outcome."""
    from flannel_bot.wiring import build_app  # here: the forkserver preloads this module

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches serve, which stops us
    os.nice(WORKER_NICE)
    clock = _JobClock()
    app = build_app(settings, clock, clusters_built="when asked")
    committed: list[Event] = []
    app.store.subscribe(committed.append)
    messages = Messages(settings.templates_dir)  # as the adapter renders
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        assert isinstance(job, Job)
        clock.offset = job.clock_offset
        committed.clear()
        rendered = None
        try:
            app.clusters.set_policy(job.policy)
            reply = portable(app.service.handle(job.text, job.who, job.command), messages.renderer)
            if reply.kind not in ("error", "run", "audit_report"):
                rendered = messages.answer(reply, job.mention, job.text)
                reply = Reply(reply.kind, {}, reply.ok)
        except Exception:
            log.exception("a heavy command failed in worker %d", os.getpid())
            reply = _error(
                "the command failed inside the bot (a bug: its log has the traceback)",
                "InternalError",
            )
        try:
            conn.send(Outcome(reply, os.getpid(), tuple(committed), rendered=rendered))
        except OSError:
            return


def portable(reply: Reply, renderer: Renderer) -> Reply:
    """A reply that can cross to the serve process, and needs no more work there: a report is
    rendered here, into `content` (an export reads the store while it is written out, and a
    long report's template takes seconds), and only what its message says of it is kept."""
    if reply.kind != "audit_report":
        return reply
    report = reply.data["report"]
    data = {
        "format": reply.data["format"],
        "report": {k: report[k] for k in ("selection", "summary", "chain")},
        "content": renderer.reply(reply),
    }
    return Reply(reply.kind, data, reply.ok)


def clock_offset(clock: Clock) -> timedelta | None:
    """What a worker adds to its system clock to read `clock` (the serve process's); None when
    that is the system clock."""
    if isinstance(clock, SystemClock):
        return None
    return clock.now() - datetime.now(UTC)
