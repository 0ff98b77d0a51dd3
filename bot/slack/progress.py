"""Run progress in Slack threads: one progress message per run and one approval message, each
updated in place as the run's audit events arrive.

Events are read from the audit log (after the last one seen), so a run approved from the shell
adapter or another process updates the Slack thread too. Updates are coalesced: at most one
`chat.update` per message per `interval` seconds, except the final state, which goes at once.
Only runs started from Slack (their source names a channel and thread) have messages.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from flannel_bot.ports.clock import Clock, parse_iso
from flannel_bot.ports.store import TERMINAL, Event, EventKind, RunRecord, Store
from flannel_bot.service.views import run_view
from flannel_bot.slack.blocks import mrkdwn_escape
from flannel_bot.slack.messages import Messages

log = logging.getLogger(__name__)
APPROVAL_EVENTS = {
    EventKind.APPROVAL_REQUESTED,
    EventKind.APPROVED,
    EventKind.APPROVAL_REVOKED,
    EventKind.DENIED,
    EventKind.PLAN_CHANGED,
    EventKind.RUN_EXPIRED,
    EventKind.RUN_SUCCEEDED,
    EventKind.RUN_FAILED,
    EventKind.RUN_CRASHED,
    EventKind.RUN_CANCELLED,
    EventKind.RUN_INTERRUPTED,
}


def mention(source: dict[str, Any], name: str) -> str:
    """mrkdwn for who did something: a real mention when it came from Slack."""
    user_id = source.get("user_id")
    if user_id and str(user_id).isalnum():
        return f"<@{user_id}>"
    return "@" + mrkdwn_escape(name)


@dataclass
class RunThread:
    channel: str
    thread_ts: str
    progress_ts: str | None = None
    approval_ts: str | None = None
    dirty: set[str] = field(default_factory=set)  # "progress", "approval"
    flushed_at: float = float("-inf")
    detail: str = ""
    node: str = ""
    first_event: int = 0
    last_event: int = 0


class Progress:
    def __init__(
        self,
        store: Store,
        client: WebClient,
        messages: Messages,
        clock: Clock,
        interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.client = client
        self.messages = messages
        self.clock = clock
        self.interval = interval
        self._monotonic = monotonic
        self._runs: dict[int, RunThread] = {}
        self._after = store.last_event_id()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="slack-progress", daemon=True)
        self.on_final: Callable[[int], None] | None = None
        store.subscribe(lambda _event: self._wake.set())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.poll()  # what is left, at once

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval / 4)
            self._wake.clear()
            try:
                self.poll()
            except Exception:  # one bad update must not stop every later one
                log.exception("updating run progress in Slack failed")

    # -- reading events -------------------------------------------------------------------------

    def poll(self) -> None:
        with self._lock:
            for event in self.store.events(after=self._after):
                self._after = event.id
                self._see(event)
            self._flush()

    def _see(self, event: Event) -> None:
        if event.run_id is None:
            return
        thread = self._runs.get(event.run_id)
        if thread is None:
            source = event.source
            if source.get("adapter") != "slack" or not source.get("thread_ts"):
                return
            thread = RunThread(str(source["channel"]), str(source["thread_ts"]))
            thread.first_event = event.id
            self._runs[event.run_id] = thread
        thread.last_event = event.id
        thread.dirty.add("progress")
        data = event.data
        if event.kind == EventKind.ACTION_STARTED:
            thread.detail = f"`{str(data.get('render', '')).splitlines()[0][:200]}`"
            node = data.get("action", {}).get("node")
            thread.node = str(node) if node else thread.node
        elif event.kind in (EventKind.CHECK, EventKind.VERIFY):
            thread.detail = ("check passed: " if data.get("ok") else "check FAILED: ") + str(
                data.get("detail", "")
            )[:800]
        elif event.kind in (EventKind.RUN_FAILED, EventKind.RUN_CRASHED):
            thread.detail = str(data.get("error") or data.get("status", ""))[:1200]
        elif event.kind == EventKind.RUN_SUCCEEDED:
            thread.detail = (
                "no change: already in the desired state"
                if data.get("changed") is False
                else str(data.get("verified") or "done")
            )
        elif event.kind == EventKind.APPROVAL_REQUESTED:
            thread.detail = "waiting for approval"
        if event.kind in APPROVAL_EVENTS and (
            event.kind == EventKind.APPROVAL_REQUESTED or thread.approval_ts is not None
        ):
            thread.dirty.add("approval")

    # -- writing messages -----------------------------------------------------------------------

    def _flush(self) -> None:
        now = self._monotonic()
        for run_id, thread in list(self._runs.items()):
            if not thread.dirty:
                continue
            run = self.store.run(run_id)
            final = run.status in TERMINAL
            if not final and now - thread.flushed_at < self.interval:
                continue
            try:
                if "approval" in thread.dirty:
                    self._post_approval(run, thread)
                self._post_progress(run, thread, final)
            except SlackApiError as exc:
                log.warning("Slack refused an update of run %s: %s", run_id, exc)
                continue
            thread.dirty.clear()
            thread.flushed_at = now
            if final:
                self._runs.pop(run_id, None)
                if self.on_final is not None:
                    self.on_final(run_id)

    def _post(self, thread: RunThread, ts: str | None, payload: dict[str, Any]) -> str:
        if ts is None:
            reply = self.client.chat_postMessage(
                channel=thread.channel, thread_ts=thread.thread_ts, **payload
            )
            return str(reply["ts"])
        self.client.chat_update(channel=thread.channel, ts=ts, **payload)
        return ts

    def _post_progress(self, run: RunRecord, thread: RunThread, final: bool) -> None:
        steps = run.plan.get("steps", [])
        current = run.current_step
        step = steps[current] if current is not None and current < len(steps) else None
        elapsed = self.clock.now() - parse_iso(run.created_at)
        seconds = max(int(elapsed.total_seconds()), 0)
        p = {
            "run_id": run.id,
            "ref": run.ref,
            "status": run.status,
            "step": current + 1 if step is not None and current is not None else 0,
            "steps": len(steps),
            "title": step["title"] if step else "",
            "node": thread.node if step else "",
            "elapsed": f"{seconds // 60}:{seconds % 60:02d}",
            "detail": thread.detail,
            "final": final,
            "first_event": thread.first_event,
            "last_event": thread.last_event,
            "head": self.store.head_hash(),
        }
        thread.progress_ts = self._post(thread, thread.progress_ts, self.messages.progress(p))

    def _post_approval(self, run: RunRecord, thread: RunThread) -> None:
        run_id = run.id
        view = run_view(run)
        with self.store.transaction() as tx:
            view["approvals"] = [dataclasses.asdict(a) for a in tx.approvals(run.id, run.plan_hash)]
        decisions = []
        for event in self.store.events(run_id=run_id):
            who = mention(event.source, event.actor or "")
            at = event.ts[11:19] + " UTC"
            if event.kind == EventKind.APPROVED:
                decisions.append(f"Approved by {who} at {at}")
            elif event.kind == EventKind.DENIED:
                reason = event.data.get("reason") or ""
                why = f": {mrkdwn_escape(str(reason))}" if reason else ""
                decisions.append(f"Denied by {who} at {at}{why}")
            elif event.kind == EventKind.PLAN_CHANGED:
                decisions.append(f"The plan changed at {at}; earlier approvals no longer count")
        payload = self.messages.approval(
            view, mention(run.source, run.requester), "\n".join(decisions[-5:])
        )
        thread.approval_ts = self._post(thread, thread.approval_ts, payload)
