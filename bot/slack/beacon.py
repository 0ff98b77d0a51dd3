"""Posting the audit chain's head to a Slack channel, so a rewritten database cannot pass unseen.

Anyone who can write the SQLite file can rewrite history and recompute every hash; they cannot
edit what Slack already shows. `flannel-bot audit verify` prints the head; compare it with the
last one posted (or with a report's) and any rewrite shows.
"""

from __future__ import annotations

import logging
import threading

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.ports.store import Store

log = logging.getLogger(__name__)


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
        state = "verified" if report.ok else f"BROKEN: {report.problem}"
        text = (
            f"Audit chain head {why}: `{report.head_hash}` ({report.events} events, {state}). "
            "Compare with `flannel-bot audit verify`."
        )
        try:
            self.client.chat_postMessage(channel=self.channel, text=text)
        except SlackApiError as exc:
            log.warning("cannot post the audit head to %s: %s", self.channel, exc)

    def every(self, minutes: int) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(minutes * 60):
                self.post(f"on schedule (every {minutes} min)")

        thread = threading.Thread(target=loop, name="audit-beacon", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
