"""Prometheus metrics in the text exposition format, without a client library.

Counters and histograms live in one process-wide registry, fed from the audit events this
process commits (commands, approvals, finished runs, step durations) and from the SSH executor
(errors); runs by state are read from the database at scrape time, so they are right across
replicas and restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from bot.ports.clock import parse_iso
from bot.ports.store import Event, EventKind

BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs
    )
    return "{" + text + "}" if text else ""


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}
        self._hist: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], list[float]]]] = {}

    def inc(self, name: str, help_text: str, value: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            _, series = self._counters.setdefault(name, (help_text, {}))
            series[key] = series.get(key, 0) + value

    def observe(self, name: str, help_text: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            _, series = self._hist.setdefault(name, (help_text, {}))
            series.setdefault(key, []).append(value)

    def render(self, gauges: Mapping[str, tuple[str, Mapping[str, float]]] = {}) -> str:
        """The exposition text; `gauges` are read at scrape time: name -> (help, label -> value)
        with the label under `state`."""
        out = []
        with self._lock:
            for name, (help_text, series) in sorted(self._counters.items()):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                out += [f"{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
            for name, (help_text, hseries) in sorted(self._hist.items()):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
                for key, values in sorted(hseries.items()):
                    for bound in BUCKETS:
                        n = sum(1 for v in values if v <= bound)
                        out.append(f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {n}")
                    out.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {len(values)}")
                    out.append(f"{name}_sum{_labels(key)} {sum(values):g}")
                    out.append(f"{name}_count{_labels(key)} {len(values)}")
        for name, (help_text, by_state) in sorted(gauges.items()):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            out += [f"{name}{_labels([('state', k)])} {v:g}" for k, v in sorted(by_state.items())]
        return "\n".join(out) + "\n"


METRICS = Metrics()


class EventMetrics:
    """Feeds METRICS from committed audit events (a `Store.subscribe` listener)."""

    def __init__(self, registry: Metrics = METRICS) -> None:
        self.registry = registry
        self._started: dict[tuple[int, int], str] = {}

    def __call__(self, event: Event) -> None:
        kind, data, reg = event.kind, event.data, self.registry
        if kind == EventKind.COMMAND:
            verb = (str(data.get("text", "")).split() or ["help"])[0][:20]
            reg.inc("flannel_bot_commands_total", "commands received, by verb", verb=verb)
        elif kind == EventKind.COMMAND_REJECTED:
            reg.inc("flannel_bot_commands_rejected_total", "commands refused with an error")
        elif kind in (EventKind.APPROVED, EventKind.DENIED):
            reg.inc("flannel_bot_approvals_total", "approval decisions", decision=kind)
        elif kind.startswith("run_") and kind != EventKind.RUN_STARTED:
            reg.inc("flannel_bot_runs_finished_total", "runs that ended", status=kind[4:])
        elif kind == EventKind.STEP_STARTED:
            self._started[(event.run_id or 0, int(data.get("step", 0)))] = event.ts
        elif kind == EventKind.STEP_FINISHED:
            began = self._started.pop((event.run_id or 0, int(data.get("step", 0))), None)
            if began:
                seconds = (parse_iso(event.ts) - parse_iso(began)).total_seconds()
                reg.observe("flannel_bot_step_duration_seconds", "runbook step durations", seconds)
