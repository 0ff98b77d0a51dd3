"""Posting the audit chain's head to a Slack channel, so a rewritten database cannot pass unseen.

Anyone who can write the SQLite file can rewrite history and recompute every hash; they cannot
edit what Slack already shows. `flannel-bot audit verify` prints the head; compare it with the
last one posted (or with a report's) and any rewrite shows. Each post also says where the kept
log starts (its first event's id and hash) and what was pruned, so a prefix that vanishes, even
under a prune forged with its own chained `audit_pruned` event, shows against the post before.
"""

from __future__ import annotations

import logging
import threading

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from flannel_bot.ports.store import ChainReport, Store

log = logging.getLogger(__name__)


def head_message(report: ChainReport, why: str) -> str:
    """The post: the head, how many events are kept and where they start, what was pruned (and
    which chained event vouches for it), and whether it all verified."""
    text = f"Audit chain head {why}: `{report.head_hash}`"
    if report.ok and report.first_id is not None:
        text += (
            f" (event {report.head_id}; {report.events} events kept, first kept event "
            f"{report.first_id} `{report.first_hash}`"
        )
        if report.pruned_through:
            text += (
                f"; events 1-{report.pruned_through} pruned, vouched for by event "
                f"{report.vouched_by}"
            )
        text += "), verified."
    elif report.ok:
        text += " (no events yet), verified."
    else:
        text += (
            f" ({report.events} events checked), {report.describe().removeprefix('audit chain ')}."
        )
    return text + " Compare with `flannel-bot audit verify`."


class Beacon:
    def __init__(self, store: Store, client: WebClient, channel: str) -> None:
        self.store = store
        self.client = client
        self.channel = channel
        self._stop = threading.Event()

    def post(self, why: str) -> None:
        if not self.channel:
            return
        report = self.store.verify()
        text = head_message(report, why)
        try:
            self.client.chat_postMessage(channel=self.channel, text=text)
        except SlackApiError as exc:
            log.warning("cannot post the audit head to %s: %s", self.channel, exc)
        # what was verified, chained, so a report walks only the events after it
        # (Store.verify_recent); the serve process writes it, `audit verify` never does
        self.store.record_verified(report)

    def every(self, minutes: int) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(minutes * 60):
                self.post(f"on schedule (every {minutes} min)")

        thread = threading.Thread(target=loop, name="audit-beacon", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
