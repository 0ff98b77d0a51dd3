"""Prometheus metrics through prometheus_client, in a registry of the bot's own.

A `Metrics` holds its own `CollectorRegistry`, never the library's global one, so several bots
(or tests) in one process do not collide. Counters and histograms are fed from the audit events
this process commits (commands, approvals, finished runs, step durations), from the SSH
executor (errors) and from the HTTP-mode gate (refusals, ack latency); runs by state are read
from the database at scrape time, so they are right across replicas and restarts. Histograms
keep counts in fixed buckets, never the observations. Every series about a cluster carries a
`cluster` label; `cluster=""` is one about none (`help`, `status`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flannel_bot.ports.clock import parse_iso
from flannel_bot.ports.store import RUN_ENDINGS, Event, EventKind, RunStatus

# a runbook step: a check that retries for minutes, a DaemonSet rollout for up to half an hour
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# an answer to Slack, which gives up on one after 3 s
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5)


class RunsByState(Collector):
    """`flannel_bot_runs{cluster,state}` read at scrape time; every state of every cluster the
    bot serves is there, zero until a run is in it."""

    def __init__(
        self, clusters: Sequence[str], count: Callable[[], Iterable[tuple[str, str, int]]]
    ) -> None:
        self.clusters = tuple(clusters)
        self.count = count

    def collect(self) -> Iterable[GaugeMetricFamily]:
        runs: dict[tuple[str, str], float] = {
            (c, str(s)): 0.0 for c in self.clusters for s in RunStatus
        }
        for cluster, state, n in self.count():
            runs[(cluster, state)] = float(n)
        family = GaugeMetricFamily(
            "flannel_bot_runs", "runs by state, from the database", labels=["cluster", "state"]
        )
        for (cluster, state), value in sorted(runs.items()):
            family.add_metric([cluster, state], value)
        return [family]


class Metrics:
    """One bot's metrics and the registry they are exposed from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.commands = Counter(
            "flannel_bot_commands",
            "commands received, by verb",
            ["cluster", "verb"],
            registry=reg,
        )
        self.commands_rejected = Counter(
            "flannel_bot_commands_rejected",
            "commands refused with an error",
            ["cluster"],
            registry=reg,
        )
        self.approvals = Counter(
            "flannel_bot_approvals", "approval decisions", ["cluster", "decision"], registry=reg
        )
        self.runs_finished = Counter(
            "flannel_bot_runs_finished", "runs that ended", ["cluster", "status"], registry=reg
        )
        self.step_duration = Histogram(
            "flannel_bot_step_duration_seconds",
            "runbook step durations",
            ["cluster"],
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        self.ssh_errors = Counter(
            "flannel_bot_ssh_errors",
            "SSH failures by kind (unreachable, host key, auth, timeout)",
            ["cluster", "kind"],
            registry=reg,
        )
        self.slack_refused = Counter(
            "flannel_bot_slack_requests_refused",
            "requests to /slack/events refused before Bolt saw them, by HTTP status",
            ["status"],
            registry=reg,
        )
        self.slack_ack = Histogram(
            "flannel_bot_slack_ack_seconds",
            "time to answer a request to /slack/events (HTTP mode), gate and Bolt's ack",
            buckets=ACK_BUCKETS,
            registry=reg,
        )
        self._runs: RunsByState | None = None

    def read_runs(
        self, clusters: Sequence[str], count: Callable[[], Iterable[tuple[str, str, int]]]
    ) -> None:
        """Expose `flannel_bot_runs` from `count()`: (cluster, state, runs) rows, at each scrape."""
        if self._runs is not None:
            self.registry.unregister(self._runs)
        self._runs = RunsByState(clusters, count)
        self.registry.register(self._runs)

    def render(self) -> str:
        """The text exposition format (`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry).decode()

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent), by its full name, e.g. `…_total`."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


METRICS = Metrics()


class EventMetrics:
    """Feeds a Metrics from committed audit events (a `Store.subscribe` listener).

    Run events carry the run id, not the cluster: the cluster is remembered from `run_started`
    until the run ends, and asked of `cluster_of` for a run started before this process."""

    def __init__(
        self,
        metrics: Metrics = METRICS,
        cluster_of: Callable[[int], str] = lambda _: "",
    ) -> None:
        self.metrics = metrics
        self.cluster_of = cluster_of
        self._clusters: dict[int, str] = {}
        self._started: dict[tuple[int, int], str] = {}

    def _cluster(self, event: Event, data: Mapping[str, object]) -> str:
        if "cluster" in data:
            return str(data["cluster"])
        if event.run_id is None:
            return ""
        cluster = self._clusters.get(event.run_id)
        if cluster is None:
            cluster = self._clusters[event.run_id] = self.cluster_of(event.run_id)
        return cluster

    def __call__(self, event: Event) -> None:
        kind, data, m = event.kind, event.data, self.metrics
        cluster = self._cluster(event, data)
        if kind == EventKind.COMMAND:
            verb = (str(data.get("text", "")).split() or ["help"])[0][:20]
            m.commands.labels(cluster=cluster, verb=verb).inc()
        elif kind == EventKind.COMMAND_REJECTED:
            m.commands_rejected.labels(cluster=cluster).inc()
        elif kind == EventKind.RUN_STARTED:
            if event.run_id is not None:
                self._clusters[event.run_id] = cluster
        elif kind == EventKind.STEP_STARTED:
            self._started[(event.run_id or 0, int(str(data.get("step", 0))))] = event.ts
        elif kind == EventKind.STEP_FINISHED:
            began = self._started.pop((event.run_id or 0, int(str(data.get("step", 0)))), None)
            if began:
                seconds = (parse_iso(event.ts) - parse_iso(began)).total_seconds()
                m.step_duration.labels(cluster=cluster).observe(seconds)
        if kind in (EventKind.APPROVED, EventKind.DENIED):
            m.approvals.labels(cluster=cluster, decision=kind).inc()
        if kind in RUN_ENDINGS:  # a denial is both a decision and the end of its run
            status = kind.removeprefix("run_")  # crashed, not failed: a bug, not the cluster
            m.runs_finished.labels(cluster=cluster, status=status).inc()
            if event.run_id is not None:
                self._clusters.pop(event.run_id, None)
