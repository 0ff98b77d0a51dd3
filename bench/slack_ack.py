"""Slack ack latency under concurrency: flannel-bot's Slack app vs a bare Bolt app, in one run.

Starts a FakeSlack (tests/slack/fake_slack.py, Slack's Web API on 127.0.0.1) in a process of its
own, as Slack is another machine (in the bots' process its threads took their GIL and its record
of every call lengthened their collector's passes), and, on 127.0.0.1, two HTTP-mode Slack apps
checking the same signing secret, then sends the same load to each:
`--requests` correctly signed `/flannel` slash commands (unique trigger ids) from `--concurrency`
clients, each client sending its next command as soon as the previous one was acknowledged.

  bare Bolt      a slack-bolt App whose `/flannel` listener only calls ack(), with the Bolt
                 settings of flannel-bot's adapter (process_before_response on: the listener
                 runs on the request's thread), behind slack_bolt's WSGI adapter on the same
                 server (bot.slack.server, waitress with flannel-bot's default limits)
  flannel-bot    the real app as `serve` builds it in HTTP mode: build_app (recorded cluster
                 examples/cluster.json, a temporary SQLite file, the system clock), SlackAdapter,
                 http_server; its listener acks, then records the delivery, posts the thread root
                 and the threaded reply to the fake; its start-up heap frozen as `serve` freezes it

Per request it measures the ack (sending the request until its HTTP response has arrived) and,
for flannel-bot, when the thread root and the threaded reply (`chat.postMessage` with `thread_ts`)
reached the fake: the work happens after the ack. Prints p50/p90/p99/max and throughput, the
ratios flannel-bot ack / bare ack and reply / ack, and every problem seen (non-200 answers,
client errors, missing or duplicate replies, error replies, warnings and exceptions logged).

The clients run in a child process (times from the shared monotonic clock), so they do not take
the servers' GIL. `--warmup` commands per app go first and are not counted. `--slow-api SECONDS`
holds every `chat.postMessage` answer of the fake for that long. Nothing leaves 127.0.0.1.

`--slow-clients N` then sends the same load to flannel-bot once more while another child process
holds N half-open connections to it (each sends part of a request head, then nothing; one the
server closes after its read timeout is opened again at once), and prints the acks with and
without them side by side, with the server's threads and memory meanwhile.

`--background N` measures instead the acks beside heavy work: the bot's cluster is a support
bundle (`--recording DIR`, or one of `--nodes` nodes (1,000) and 30 pods per node that
bench/_gen.py writes into a temporary directory first), and the same load is sent twice to each
of two bots, once alone and once while N `/flannel diagnose` commands of that bundle run inside
the same bot (sent as signed requests too), the load starting `--settle` seconds after them and
sent again and again (`--requests` commands each time) until they are answered, so that acks
are measured beside every phase of a diagnose. The two bots are the old path,
`[serve] workers = 0` (heavy commands in threads of the serve process) and the new one,
`[serve] workers = --workers` (2; in worker processes, bot.slack.workers). Prints ack
p50/p90/p99 with and without the background work for both, side by side, how many diagnoses
ran and finished during the load, and their replies checked (each must be the bundle's report).
The load's replies still queued when the diagnoses are answered are dropped, not posted.

Usage (from the repo root):
  .venv/bin/python bench/slack_ack.py [--requests 500] [--concurrency 20] [--text help]
                                      [--slow-api 0] [--warmup 20] [--reply-timeout 60]
                                      [--slow-clients 0]
  .venv/bin/python bench/slack_ack.py --background 2 [--recording DIR | --nodes 1000]
                                      [--workers 2] [--settle 5] [--requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing
import os
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from slack_bolt import Ack
from slack_bolt import App as BoltApp
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from flannel_bot.settings import SlackSettings, load_settings
from flannel_bot.slack.app import SlackAdapter
from flannel_bot.slack.serve import freeze_start_up_heap, http_server
from flannel_bot.slack.server import HttpServer
from flannel_bot.wiring import build_app

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `tests` is not installed; the fake and the signer live there
    sys.path.insert(0, str(REPO))

from tests.slack.conftest import CONFIG, EXAMPLE_CLUSTER, SECRET  # noqa: E402
from tests.slack.fake_slack import PROXY_ENV_VARS, FakeSlack  # noqa: E402
from tests.slack.signing import new_trigger_id, sign, slash_command_body  # noqa: E402
from tests.slack.wire import HALF_HEAD, address  # noqa: E402

# (index, sent, answered, HTTP status or 0, error) with times from time.monotonic()
Sample = tuple[int, float, float, int, str]


# ----- the clients (run in a child process) ----------------------------------------------------


def _one(url: str, index: int, channel: str, text: str) -> Sample:
    parts = urlsplit(url)
    body = slash_command_body(
        text, user_id="UALICE", user_name="alice", channel_id=channel, trigger_id=new_trigger_id()
    )
    headers = sign(SECRET, body)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    sent = time.monotonic()
    try:
        conn.request("POST", parts.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return index, sent, time.monotonic(), response.status, ""
    except (OSError, http.client.HTTPException) as exc:
        return index, sent, time.monotonic(), 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def drive(url: str, requests: int, concurrency: int, text: str, prefix: str) -> list[Sample]:
    """Send `requests` signed slash commands from `concurrency` threads; request i comes from
    channel `prefix` + i, so its messages in the fake can be told apart."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda i: _one(url, i, f"{prefix}{i:05d}", text), range(requests)))


def hold_half_open(
    url: str, count: int, ramp: float, ready: Event, stop: Event, closed: Any, result: Any
) -> None:
    """Keep `count` connections open that each sent part of a request head and then nothing,
    opened evenly over `ramp` seconds (so the server's read timeout closes them a few at a time,
    not all at once), each one the server closes opened again at once, until `stop`. Counts the
    server's closes in `closed` (a shared int); puts the connections opened on `result`."""
    raise_file_limit()
    where = address(url)
    poller = selectors.DefaultSelector()
    opened = established = 0

    def connect() -> None:
        nonlocal opened
        conn = socket.socket()
        conn.setblocking(False)
        conn.connect_ex(where)
        poller.register(conn, selectors.EVENT_WRITE, "connecting")
        opened += 1

    def drop(conn: socket.socket) -> None:
        poller.unregister(conn)
        conn.close()
        connect()

    started = time.monotonic()
    while not stop.is_set():
        due = count if ramp <= 0 else min(count, int(count * (time.monotonic() - started) / ramp))
        while opened < due:
            connect()
        for key, _ in poller.select(timeout=0.05):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            if key.data == "connecting":
                if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop(conn)
                    continue
                try:
                    conn.send(HALF_HEAD)
                except OSError:
                    drop(conn)
                    continue
                poller.modify(conn, selectors.EVENT_READ, "open")
                established += 1
                if established >= count:
                    ready.set()
                continue
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:  # the server closed it (its read timeout): the attack goes on
                with closed.get_lock():
                    closed.value += 1
                established -= 1
                drop(conn)
    for key in list(poller.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    result.put(opened)


def raise_file_limit() -> None:
    """Thousands of connections need as many descriptors: the soft limit up to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ----- the servers ------------------------------------------------------------------------------


@dataclass
class Problems:
    """What went wrong inside this process while the load ran."""

    logs: list[logging.LogRecord] = field(default_factory=list)
    thread_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Collector(logging.Handler):
    def __init__(self, problems: Problems) -> None:
        super().__init__(logging.WARNING)
        self.problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        with self.problems.lock:
            self.problems.logs.append(record)


def serve(server: HttpServer) -> tuple[str, threading.Thread]:
    """Start `server`; its request errors are logged (waitress's logger), so Collector has them."""
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    host, port = server.server_address
    return f"http://{host}:{port}/slack/events", thread


def bare_bolt(slack: SlackProcess) -> tuple[BoltApp, HttpServer]:
    bolt = BoltApp(
        client=WebClient(token="xoxb-bench", base_url=slack.base_url),
        signing_secret=SECRET,
        request_verification_enabled=True,
        token_verification_enabled=False,
        ignoring_self_events_enabled=False,
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        listener_executor=ThreadPoolExecutor(1, thread_name_prefix="bare"),
    )

    def on_command(ack: Ack) -> None:
        ack()

    bolt.command("/flannel")(on_command)
    handler = SlackRequestHandler(bolt, path="/slack/events")
    limits = SlackSettings()
    server = HttpServer(
        handler,
        "127.0.0.1",
        0,
        threads=limits.http_threads,
        read_timeout=limits.read_timeout_seconds,
        max_body=limits.max_body_bytes,
        max_connections=limits.max_connections,
    )
    return bolt, server


def flannel_bot(
    slack: SlackProcess, tmp: Path, recording: Path | None = None, workers: int | None = None
) -> tuple[SlackAdapter, HttpServer]:
    """The bot on the recorded example cluster, or on `recording`; `workers`: [serve] workers."""
    text = CONFIG
    if recording is not None:
        text = text.replace(f'recording = "{EXAMPLE_CLUSTER}"', f'recording = "{recording}"')
    if workers is not None:
        text += f"\n[serve]\nworkers = {workers}\n"
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "flannel-bot.toml"
    config.write_text(text)
    env = {
        "HOME": str(tmp),
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.base_url,
    }
    settings = load_settings(config, env, overrides={"db": str(tmp / "bot.db")})
    app = build_app(settings)  # the system clock
    adapter = SlackAdapter(app, settings.slack)
    return adapter, http_server(adapter, "127.0.0.1", 0)


# ----- figures ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Row:
    name: str
    latencies: list[float]  # seconds
    span: float  # seconds from the first send to the last event counted

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def line(self) -> str:
        ms = [self.p(q) * 1000 for q in (0.5, 0.9, 0.99, 1.0)]
        rate = len(self.latencies) / self.span if self.span > 0 else float("nan")
        cells = "".join(f"{v:9.1f}" for v in ms)
        slow = sum(1 for v in self.latencies if v >= 1.0)
        return f"  {self.name:40}{len(self.latencies):6}{cells}{rate:8.0f}{slow:7}"


HEADER = (
    f"  {'':40}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'per s':>8}{'>=1 s':>7}"
)


def ack_row(name: str, samples: list[Sample]) -> Row:
    ok = [s for s in samples if s[3] == 200]
    span = max((s[2] for s in ok), default=0.0) - min((s[1] for s in samples), default=0.0)
    return Row(name, [s[2] - s[1] for s in ok], span)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "n/a"


# ----- the run ----------------------------------------------------------------------------------


@dataclass
class Posts:
    """What flannel-bot posted to the fake for the commands of one channel prefix."""

    roots: dict[str, float]  # channel -> arrival of the thread root
    replies: dict[str, list[float]]  # channel -> arrivals of threaded replies
    ephemerals: dict[str, int]
    deletes: int


# a Web API call as the bench reads it: method, channel, threaded (has thread_ts), arrival
Seen = tuple[str, str, bool, float]


def _posts(seen: list[Seen], prefix: str) -> tuple[Any, ...]:
    roots: dict[str, float] = {}
    replies: dict[str, list[float]] = {}
    ephemerals: Counter[str] = Counter()
    deletes = 0
    for method, channel, threaded, at in seen:
        if not channel.startswith(prefix):
            continue
        if method == "chat.postMessage" and threaded:
            replies.setdefault(channel, []).append(at)
        elif method == "chat.postMessage":
            roots.setdefault(channel, at)
        elif method == "chat.postEphemeral":
            ephemerals[channel] += 1
        elif method == "chat.delete":
            deletes += 1
    return roots, replies, dict(ephemerals), deletes


def run_fake_slack(conn: Connection, usergroups: dict[str, list[str]]) -> None:
    """A FakeSlack in this (child) process, answering SlackProcess's questions over `conn`."""
    with FakeSlack() as slack:
        slack.usergroups = usergroups
        seen: list[Seen] = []
        first_reply: dict[str, int] = {}  # channel -> index of its first threaded reply
        conn.send(slack.base_url)
        while True:
            try:
                request = conn.recv()
            except EOFError:
                return
            name, *args = request
            if name == "stop":
                conn.send(None)
                return
            calls = slack.calls()
            for index in range(len(seen), len(calls)):
                call = calls[index]
                channel = str(call.params.get("channel", ""))
                threaded = bool(call.params.get("thread_ts"))
                seen.append((call.method, channel, threaded, call.at))
                if call.method == "chat.postMessage" and threaded:
                    first_reply.setdefault(channel, index)
            if name == "posts":
                conn.send(_posts(seen, args[0]))
            elif name == "count":
                conn.send(len(seen))
            elif name == "since":  # the calls from index args[0] on, of channels args[1]*
                conn.send([s for s in seen[args[0] :] if s[1].startswith(args[1])])
            elif name == "report":  # the channel's first threaded reply is a diagnose report
                index = first_reply.get(args[0])
                conn.send(index is not None and "here it is" in json.dumps(calls[index].params))
            elif name == "delay":
                conn.send(slack.delay(*args))
            elif name == "errors":
                conn.send([repr(e) for e in slack.errors])


class SlackProcess:
    """tests/slack/fake_slack.py's FakeSlack in a process of its own, as Slack is another
    machine: in the bots' process its HTTP threads took their GIL, and its record of every call
    (millions of objects by the end of --background) made each full pass of their cycle
    collector last half a second. What the bench reads of the calls comes back over a pipe."""

    def __init__(self, usergroups: dict[str, list[str]]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        self._process = context.Process(
            target=run_fake_slack, args=(theirs, usergroups), name="fake-slack", daemon=True
        )
        self._process.start()
        theirs.close()
        self._lock = threading.Lock()
        self.base_url = str(self._conn.recv())

    def _ask(self, *request: Any) -> Any:
        with self._lock:
            self._conn.send(request)
            return self._conn.recv()

    def posts(self, prefix: str) -> Posts:
        return Posts(*self._ask("posts", prefix))

    def count(self) -> int:
        return int(self._ask("count"))

    def since(self, index: int, prefix: str) -> list[Seen]:
        return list(self._ask("since", index, prefix))

    def is_report(self, channel: str) -> bool:
        return bool(self._ask("report", channel))

    def delay(self, method: str, seconds: float) -> None:
        self._ask("delay", method, seconds)

    def errors(self) -> list[str]:
        return list(self._ask("errors"))

    def __enter__(self) -> SlackProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self._ask("stop")
        self._process.join(10)
        self._conn.close()


def posts(slack: SlackProcess, prefix: str) -> Posts:
    return slack.posts(prefix)


def wait_for_work(
    slack: SlackProcess, prefix: str, expected: int, quiet: float, timeout: float
) -> float:
    """Wait until `expected` commands got a threaded or an error reply and the fake then heard
    nothing for `quiet` seconds (late work of unacknowledged commands); seconds waited."""
    start = time.monotonic()
    calls, changed = -1, start
    while time.monotonic() - start < timeout:
        now = time.monotonic()
        seen = posts(slack, prefix)
        count = slack.count()
        if count != calls:
            calls, changed = count, now
        replied = len(set(seen.replies) | set(seen.ephemerals))
        if replied >= expected and now - changed >= quiet:
            break
        time.sleep(0.05)
    return time.monotonic() - start


def load(
    clients: Executor, url: str, requests: int, concurrency: int, text: str, prefix: str
) -> list[Sample]:
    return clients.submit(drive, url, requests, concurrency, text, prefix).result()


@dataclass
class Attack:
    """The load sent while slow clients held connections open, and the bot process meanwhile."""

    samples: list[Sample]
    count: int
    opened: int
    closed: int  # by the server, in all
    closed_during_load: int
    threads: tuple[int, int]  # before, most while under attack
    rss_mb: tuple[float, float]
    descriptors: tuple[int, int]


def process_now() -> tuple[int, float, int]:
    """This process's threads, resident memory (MB) and open descriptors (Linux's /proc)."""
    status = Path("/proc/self/status").read_text()
    rss_kb = int(status.split("VmRSS:")[1].split()[0])
    return threading.active_count(), rss_kb / 1024, len(os.listdir("/proc/self/fd"))


def load_under_slow_clients(
    spawn: Any, clients: Executor, url: str, args: argparse.Namespace, slack: SlackProcess
) -> Attack:
    """The same load again while a child process holds `--slow-clients` half-open connections.
    They are opened over one read timeout, and the load starts once all are open, so the server
    is closing and the attacker reopening them all along the load."""
    ready, stop, result, closed = spawn.Event(), spawn.Event(), spawn.Queue(), spawn.Value("i")
    ramp = SlackSettings().read_timeout_seconds
    attacker = spawn.Process(
        target=hold_half_open,
        args=(url, args.slow_clients, ramp, ready, stop, closed, result),
        daemon=True,
    )
    before = process_now()
    most = list(before)
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            for i, value in enumerate(process_now()):
                most[i] = max(most[i], value)

    sampler = threading.Thread(target=sample, daemon=True)
    attacker.start()
    sampler.start()
    try:
        if not ready.wait(ramp + 120):
            raise SystemExit(f"{args.slow_clients} slow clients did not connect in time")
        closed_before = closed.value
        samples = load(clients, url, args.requests, args.concurrency, args.text, "CA")
        closed_during = closed.value - closed_before
        acked = sum(1 for s in samples if s[3] == 200)
        wait_for_work(slack, "CA", acked, 0.5 + 2 * args.slow_api, args.reply_timeout)
    finally:
        stop.set()
        opened = result.get(timeout=60)
        attacker.join()
        sampling.set()
        sampler.join()
    return Attack(
        samples,
        args.slow_clients,
        opened,
        closed.value,
        closed_during,
        (before[0], int(most[0])),
        (before[1], most[1]),
        (before[2], int(most[2])),
    )


def report_problems(
    name: str, samples: Iterable[Sample], extra: Callable[[], list[str]] | None = None
) -> list[str]:
    lines = []
    statuses = Counter(s[3] for s in samples if s[3] != 200 and not s[4])
    errors = Counter(s[4] for s in samples if s[4])
    for status, count in sorted(statuses.items()):
        lines.append(f"{name}: {count} request(s) answered HTTP {status}")
    for error, count in errors.most_common():
        lines.append(f"{name}: {count} request(s) failed: {error}")
    if extra is not None:
        lines.extend(extra())
    return lines


# ----- heavy work in the background (--background) ----------------------------------------------


class Background:
    """`count` diagnoses in the bot at once, each `/flannel diagnose` from a channel of its
    own."""

    def __init__(self, url: str, slack: SlackProcess, count: int, prefix: str) -> None:
        self.url, self.slack, self.prefix = url, slack, prefix
        self.stop = threading.Event()
        self.sent: list[tuple[str, float]] = []  # channel, when sent
        self.lock = threading.Lock()
        self.looked = 0
        self.answers: dict[str, float] = {}
        self.threads = [
            threading.Thread(target=self._slot, args=(i,), daemon=True) for i in range(count)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _slot(self, slot: int) -> None:
        channel = f"{self.prefix}{slot}0000"
        with self.lock:
            self.sent.append((channel, time.monotonic()))
        _one(self.url, 0, channel, "diagnose")

    def answered(self, channel: str) -> float | None:
        """When the diagnose from `channel` was answered (its threaded reply or an error)."""
        with self.lock:  # only the calls not looked at yet: tens of thousands by the end
            count = self.slack.count()
            for method, where, threaded, at in self.slack.since(self.looked, self.prefix):
                reply = method == "chat.postEphemeral" or (
                    method == "chat.postMessage" and threaded
                )
                if reply and where not in self.answers:
                    self.answers[where] = at
            self.looked = count
            return self.answers.get(channel)

    def finish(self, timeout: float) -> None:
        """No more diagnoses; wait for those sent to be answered."""
        self.stop.set()
        for thread in self.threads:
            thread.join()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(self.answered(ch) for ch, _ in self.sent):
            time.sleep(0.5)


@dataclass
class Mode:
    name: str
    alone: list[Sample]
    busy: list[Sample]
    window: tuple[float, float]  # the busy load's first send and last answer
    diagnoses: list[tuple[float, float | None]]  # sent, answered
    bad_replies: list[str]


def bundle_for(args: argparse.Namespace, tmp: Path) -> Path:
    if args.recording is not None:
        return Path(args.recording).resolve()
    from _gen import write_dump  # only this mode writes a bundle

    started = time.monotonic()
    dump = write_dump(tmp / "bundle", args.nodes, args.nodes * 30)
    print(
        f"wrote a {dump.nodes:,}-node bundle ({dump.pods:,} pods, {dump.bytes / 1e6:,.0f} MB) "
        f"in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return dump.path


def run_mode(
    name: str,
    workers: int,
    slack: SlackProcess,
    clients: Executor,
    tmp: Path,
    recording: Path,
    args: argparse.Namespace,
) -> Mode:
    tag = "I" if workers == 0 else "W"
    adapter, server = flannel_bot(slack, tmp / name, recording, workers)
    url, thread = serve(server)
    adapter.progress.start()
    if adapter.heavy is not None:
        adapter.heavy.start()  # as `serve` does
    freeze_start_up_heap()  # as `serve` does before it serves
    n, c, text = args.requests, args.concurrency, args.text
    background = Background(url, slack, args.background, f"B{tag}")
    try:
        warm = load(clients, url, args.warmup, c, text, f"W{tag}")
        wait_for_work(slack, f"W{tag}", sum(s[3] == 200 for s in warm), 0.5, args.reply_timeout)
        alone = load(clients, url, n, c, text, f"A{tag}")
        wait_for_work(slack, f"A{tag}", sum(s[3] == 200 for s in alone), 0.5, args.reply_timeout)
        background.start()
        time.sleep(args.settle)  # the diagnoses have begun
        # the load again and again until the first diagnoses are answered: acks beside all of
        # their phases (reading the bundle, the rules, rendering the reply)
        busy: list[Sample] = []
        deadline = time.monotonic() + args.reply_timeout * 10
        while not busy or (
            time.monotonic() < deadline
            and not all(background.answered(ch) for ch, _ in background.sent)
        ):
            busy += load(clients, url, n, c, text, f"L{tag}{len(busy) // n:02d}")
        background.stop.set()
        window = (min(s[1] for s in busy), max(s[2] for s in busy))
        print(f"  {name}: load done; waiting for the background diagnoses to end", flush=True)
        background.finish(args.reply_timeout * 10)
        wait_for_work(slack, f"L{tag}", sum(s[3] == 200 for s in busy), 0.5, args.reply_timeout)
        print(f"  {name}: {len(busy)} commands sent beside the diagnoses", flush=True)
    finally:
        background.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()
        executor = adapter.bolt.listener_runner.listener_executor
        if isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=True, cancel_futures=True)
        # the load's replies still queued are dropped (tens of thousands: minutes to post)
        adapter.work.shutdown(wait=True, cancel_futures=True)
        adapter.close(timeout=0)
        adapter.progress.stop()
        adapter.app.store.close()
    diagnoses = [(sent, background.answered(ch)) for ch, sent in background.sent]
    bad = [channel for channel, _ in background.sent if not slack.is_report(channel)]
    return Mode(name, alone, busy, window, diagnoses, bad)


def background_main(args: argparse.Namespace) -> None:
    started = time.monotonic()
    spawn = multiprocessing.get_context("spawn")
    modes: list[Mode] = []
    with (
        ProcessPoolExecutor(1, mp_context=spawn) as clients,
        SlackProcess({"SAPPROVERS": ["UCAROL"]}) as slack,
        tempfile.TemporaryDirectory(prefix="flannel-bench-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        recording = bundle_for(args, tmp)
        for name, workers in (("old, in serve", 0), (f"new, {args.workers} workers", args.workers)):
            print(f"{name}: running", flush=True)
            modes.append(run_mode(name, workers, slack, clients, tmp, recording, args))
        fake_errors = slack.errors()

    n, c = args.requests, args.concurrency
    print(
        f"\n{n} signed `/flannel {args.text}` commands at concurrency {c} alone, and beside "
        f"{args.background} `/flannel diagnose` of {recording} running in the same bot "
        f"(repeated until they were answered; old path: in serve's threads; new: [serve] "
        f"workers = {args.workers}); "
        "latency from sending the request"
    )
    print(HEADER)
    for mode in modes:
        print(ack_row(f"{mode.name}: ack alone", mode.alone).line())
        print(ack_row(f"{mode.name}: ack beside diagnoses", mode.busy).line())
    old, new = modes
    for mode in modes:
        alone, busy = ack_row("", mode.alone), ack_row("", mode.busy)
        start, end = mode.window
        running = sum(1 for sent, done in mode.diagnoses if sent < end and (done or end) > start)
        finished = [done - sent for sent, done in mode.diagnoses if done is not None]
        print(
            f"  {mode.name}: beside / alone: p50 {ratio(busy.p(0.5), alone.p(0.5))}, "
            f"p99 {ratio(busy.p(0.99), alone.p(0.99))}; {running} diagnoses overlapped the "
            f"{end - start:.1f} s load, {len(finished)} of {len(mode.diagnoses)} answered "
            f"(each in {min(finished, default=0):.0f}-{max(finished, default=0):.0f} s)"
        )
    old_busy, new_busy = ack_row("", old.busy), ack_row("", new.busy)
    print(
        f"  new / old, beside diagnoses: p50 {ratio(new_busy.p(0.5), old_busy.p(0.5))}, "
        f"p99 {ratio(new_busy.p(0.99), old_busy.p(0.99))}; new p99 "
        f"{new_busy.p(0.99) * 1000:.1f} ms (goal <= 50 ms)"
    )
    print(f"  total {time.monotonic() - started:.0f} s")
    lines: list[str] = []
    for mode in modes:
        lines += report_problems(f"{mode.name} alone", mode.alone)
        lines += report_problems(f"{mode.name} beside diagnoses", mode.busy)
        if mode.bad_replies:
            lines.append(
                f"{mode.name}: {len(mode.bad_replies)} diagnose(s) got no report "
                f"(e.g. {mode.bad_replies[0]})"
            )
    lines += [f"fake Slack error: {e!r}" for e in fake_errors[:5]]
    print("problems: " + ("none" if not lines else ""))
    for line in lines:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500, help="commands per app (500)")
    parser.add_argument("--concurrency", type=int, default=20, help="clients at once (20)")
    parser.add_argument("--text", default="help", help="the /flannel command text (help)")
    parser.add_argument(
        "--slow-api", type=float, default=0.0, metavar="SECONDS", help="delay chat.postMessage"
    )
    parser.add_argument("--warmup", type=int, default=20, help="uncounted commands first (20)")
    parser.add_argument(
        "--reply-timeout", type=float, default=60.0, help="cap on waiting for the bot's work"
    )
    parser.add_argument(
        "--slow-clients",
        type=int,
        default=0,
        metavar="N",
        help="then the load again beside N half-open connections (0: not)",
    )
    parser.add_argument(
        "--background",
        type=int,
        default=0,
        metavar="N",
        help="the load alone and beside N diagnoses, in serve vs in workers (0: not)",
    )
    parser.add_argument("--recording", type=Path, help="--background: the bundle to diagnose")
    parser.add_argument("--nodes", type=int, default=1000, help="--background: bundle size")
    parser.add_argument("--workers", type=int, default=2, help="--background: [serve] workers")
    parser.add_argument("--settle", type=float, default=1.0, help="--background: seconds")
    args = parser.parse_args()
    raise_file_limit()
    if args.background > 0:
        for name in PROXY_ENV_VARS:
            os.environ.pop(name, None)
        logging.getLogger().setLevel(logging.WARNING)
        background_main(args)
        return

    for name in PROXY_ENV_VARS:  # slack_sdk would send even 127.0.0.1 through a proxy
        os.environ.pop(name, None)
    problems = Problems()
    collector = Collector(problems)
    logging.getLogger().addHandler(collector)
    logging.getLogger().setLevel(logging.WARNING)
    previous_hook = threading.excepthook

    def excepthook(hook_args: threading.ExceptHookArgs) -> None:
        name = hook_args.thread.name if hook_args.thread else "?"
        error = f"{name}: {hook_args.exc_type.__name__}: {hook_args.exc_value}"
        with problems.lock:
            problems.thread_errors.append(error)

    threading.excepthook = excepthook

    started = time.monotonic()
    spawn = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(1, mp_context=spawn) as clients,
        SlackProcess({"SAPPROVERS": ["UCAROL"]}) as slack,
        tempfile.TemporaryDirectory(prefix="flannel-bench-") as tmp,
    ):
        bolt, bare_server = bare_bolt(slack)
        adapter, bot_server = flannel_bot(slack, Path(tmp))
        bare_url, bare_thread = serve(bare_server)
        bot_url, bot_thread = serve(bot_server)
        adapter.progress.start()
        freeze_start_up_heap()  # as `serve` does before it serves
        if args.slow_api > 0:
            slack.delay("chat.postMessage", args.slow_api)
        n, c, text = args.requests, args.concurrency, args.text
        waited = 0.0
        attack: Attack | None = None
        try:
            load(clients, bare_url, args.warmup, c, text, "CW")
            bare = load(clients, bare_url, n, c, text, "CB")
            warm = load(clients, bot_url, args.warmup, c, text, "CW")
            quiet = 0.5 + 2 * args.slow_api
            warm_acked = sum(1 for s in warm if s[3] == 200)
            wait_for_work(slack, "CW", warm_acked, quiet, args.reply_timeout)
            bot = load(clients, bot_url, n, c, text, "CM")
            acked = sum(1 for s in bot if s[3] == 200)
            waited = wait_for_work(slack, "CM", acked, quiet, args.reply_timeout)
            if args.slow_clients > 0:
                attack = load_under_slow_clients(spawn, clients, bot_url, args, slack)
        finally:
            for server, thread in ((bare_server, bare_thread), (bot_server, bot_thread)):
                server.shutdown()
                server.server_close()
                thread.join()
            # work still queued after the cap is dropped; running listeners finish first
            for app in (bolt, adapter.bolt):
                executor = app.listener_runner.listener_executor
                if isinstance(executor, ThreadPoolExecutor):
                    executor.shutdown(wait=True, cancel_futures=True)
            adapter.work.shutdown(wait=True, cancel_futures=True)
            if adapter.heavy is not None:
                adapter.heavy.shutdown(timeout=0)
            adapter.progress.stop()
            adapter.app.store.close()
        done = posts(slack, "CM")
        fake_errors = slack.errors()
    elapsed = time.monotonic() - started
    threading.excepthook = previous_hook
    logging.getLogger().removeHandler(collector)

    # ----- figures
    sent = {f"CM{s[0]:05d}": s for s in bot}
    ok = {ch: s for ch, s in sent.items() if s[3] == 200}
    first_send = min((s[1] for s in bot), default=0.0)
    root_lat = [done.roots[ch] - s[1] for ch, s in ok.items() if ch in done.roots]
    reply_lat = [min(done.replies[ch]) - s[1] for ch, s in ok.items() if ch in done.replies]
    last_root = max((done.roots[ch] for ch in ok if ch in done.roots), default=first_send)
    last_reply = max((min(done.replies[ch]) for ch in ok if ch in done.replies), default=first_send)
    rows = [
        ack_row("bare Bolt: ack", bare),
        ack_row("flannel-bot: ack", bot),
        Row("flannel-bot: thread root posted", root_lat, last_root - first_send),
        Row("flannel-bot: threaded reply posted", reply_lat, last_reply - first_send),
    ]
    before = sum(1 for ch, s in ok.items() if ch in done.replies and s[2] < min(done.replies[ch]))

    limits = SlackSettings()
    slow = f", chat.postMessage delayed {args.slow_api:g} s" if args.slow_api > 0 else ""
    print(
        f"{n} signed `/flannel {text}` commands per app at concurrency {c} "
        f"(after {args.warmup} uncounted){slow}; latency from sending the request; "
        f"both on bot.slack.server ({limits.http_threads} threads, "
        f"{limits.read_timeout_seconds:g} s read timeout)"
    )
    print(HEADER)
    for row in rows:
        print(row.line())
    if attack is not None:
        print(ack_row(f"flannel-bot: ack, {attack.count} slow clients", attack.samples).line())
    bare_row, ack, _, reply = rows
    print(
        f"  flannel-bot ack / bare ack:  p50 {ratio(ack.p(0.5), bare_row.p(0.5))}, "
        f"p99 {ratio(ack.p(0.99), bare_row.p(0.99))}"
    )
    print(
        f"  flannel-bot reply / ack:     p50 {ratio(reply.p(0.5), ack.p(0.5))}, "
        f"p99 {ratio(reply.p(0.99), ack.p(0.99))}"
    )
    print(f"  acked before the reply was posted: {before} of {len(reply_lat)} replied")
    if attack is not None:
        attacked = ack_row("", attack.samples)
        print(
            f"  with / without {attack.count} slow clients: "
            f"ack p50 {ratio(attacked.p(0.5), ack.p(0.5))}, "
            f"p99 {ratio(attacked.p(0.99), ack.p(0.99))}; "
            f"{sum(1 for v in attacked.latencies if v >= 3.0)} ack(s) past Slack's 3 s"
        )
        print(
            f"  slow clients: {attack.opened} connections opened, {attack.closed} closed by the "
            f"server's read timeout and opened again ({attack.closed_during_load} during the "
            f"load); the bot process meanwhile: "
            f"threads {attack.threads[0]} -> at most {attack.threads[1]}, "
            f"resident {attack.rss_mb[0]:.0f} -> at most {attack.rss_mb[1]:.0f} MB, "
            f"descriptors {attack.descriptors[0]} -> at most {attack.descriptors[1]}"
        )
    print(f"  waited {waited:.1f} s after the load for the bot to go quiet; total {elapsed:.0f} s")

    # ----- problems
    def bot_posts() -> list[str]:
        lines = []
        missing = [ch for ch in ok if ch not in done.replies and ch not in done.ephemerals]
        dupes = {ch: len(v) for ch, v in done.replies.items() if len(v) > 1}
        if missing:
            lines.append(
                f"flannel-bot: {len(missing)} acked command(s) got no reply within "
                f"{args.reply_timeout:g} s (e.g. {', '.join(sorted(missing)[:3])})"
            )
        failed = [ch for ch, s in sent.items() if s[3] != 200]
        late = [ch for ch in failed if ch in done.replies or ch in done.ephemerals]
        if late:
            lines.append(
                f"flannel-bot: {len(late)} of the {len(failed)} command(s) not answered 200 "
                "were carried out anyway (reply posted after the failed ack)"
            )
        if dupes:
            lines.append(f"flannel-bot: {len(dupes)} command(s) got more than one reply")
        if done.ephemerals:
            lines.append(f"flannel-bot: {len(done.ephemerals)} command(s) got an error reply")
        if done.deletes:
            lines.append(f"flannel-bot: {done.deletes} thread root(s) deleted (error replies)")
        return lines

    lines = report_problems("bare Bolt", bare) + report_problems("flannel-bot", bot, bot_posts)
    if attack is not None:
        lines += report_problems("flannel-bot beside slow clients", attack.samples)
    logged = Counter(
        (r.levelname, r.name, r.getMessage().splitlines()[0][:160]) for r in problems.logs
    )
    for (level, logger, message), count in logged.most_common(10):
        lines.append(f"log {level} {logger} x{count}: {message}")
    tracebacks = [r for r in problems.logs if r.exc_info]
    if tracebacks:
        lines.append(f"{len(tracebacks)} logged exception(s); the first:")
        lines.append(logging.Formatter().formatException(tracebacks[0].exc_info))  # type: ignore[arg-type]
    lines += [f"thread died: {e}" for e in problems.thread_errors[:10]]
    lines += [f"fake Slack error: {e!r}" for e in fake_errors[:5]]
    print("problems: " + ("none" if not lines else ""))
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    main()
