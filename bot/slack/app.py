"""The Slack adapter: `/flannel` and the buttons, handled by the same Service as the shell.

Every request is acknowledged first (Slack's limit is 3 seconds), then handled: the listener
acks on the thread that received the request and queues the work on the adapter's own pool. A
request that arrives again (HTTP retries, Socket Mode redeliveries, a second delivery of one
click) is recognised by its trigger id (or, without one, its signed bytes:
bot.slack.deliveries) or action timestamp, recorded atomically in SQLite, and done only once.
Replies go to a thread started by the command, mentioning the requester; errors go to the
requester alone (ephemeral). Heavy commands (diagnose, audit verify, audit reports) run in worker
processes (bot.slack.workers), so that they cannot hold up the acks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, BoltRequest
from slack_bolt import App as BoltApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from flannel_bot.errors import UserError
from flannel_bot.ports.store import EventKind, Requester
from flannel_bot.service import commands as c
from flannel_bot.service.handler import Reply
from flannel_bot.settings import SlackSettings
from flannel_bot.slack.beacon import Beacon
from flannel_bot.slack.blocks import mrkdwn_code, mrkdwn_escape
from flannel_bot.slack.client import SafeWebClient
from flannel_bot.slack.deliveries import command_keys
from flannel_bot.slack.identity import Identity
from flannel_bot.slack.messages import Messages
from flannel_bot.slack.origin import click_refusal, command_refusal, team_of
from flannel_bot.slack.progress import Progress
from flannel_bot.slack.workers import Job, Outcome, QueueFull, WorkerPool, clock_offset, is_heavy
from flannel_bot.wiring import App

log = logging.getLogger(__name__)
PLAN_FIX = re.compile(r"\Aplan_fix:[0-9]+\Z")  # Bolt matches with re.search
SCOPES = {"run", "node", "runbook", "user", "channel", "thread"}


def make_client(settings: SlackSettings) -> SafeWebClient:
    """A Web API client that waits out 429s (Retry-After), retries dropped connections, and
    redacts and defuses everything it sends (bot.slack.client)."""
    return SafeWebClient(
        token=settings.bot_token,
        base_url=settings.api_url,
        timeout=15,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=5),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackAdapter:
    def __init__(
        self, app: App, settings: SlackSettings, client: SafeWebClient | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.client = client or make_client(settings)
        self.identity = Identity(settings, self.client)
        self.messages = Messages(app.settings.templates_dir)
        self.progress = Progress(
            app.store, self.client, self.messages, app.engine.clock, settings.progress_interval
        )
        self.beacon = Beacon(app.store, self.client, settings.audit_channel)
        # posting the head verifies the whole chain (seconds on a big log): not on the thread
        # that keeps progress messages moving
        self.progress.on_final = lambda run_id: self._later(self.beacon.post, f"after run {run_id}")
        self.base_policy = app.engine.policy
        self._policy_lock = threading.Lock()
        # the listeners only ack, on the thread that received the request; the work queues
        # here, so a burst of slow commands never holds up the next ack (Slack gives up after
        # 3 seconds)
        self.work = ThreadPoolExecutor(max_workers=16, thread_name_prefix="slack-work")
        # and heavy commands run in other processes, which hold no GIL of this one
        serve = app.settings.serve
        self.heavy = (
            WorkerPool(app.settings, serve.workers, serve.queue) if serve.workers > 0 else None
        )
        self.bolt = self._build()

    def close(self, timeout: float = 60.0) -> None:
        """Finish the work under way (the waiting heavy commands are cancelled, and told so)."""
        if self.heavy is not None:
            self.heavy.shutdown(timeout)
        self.work.shutdown(wait=True, cancel_futures=False)

    def _build(self) -> BoltApp:
        bolt = BoltApp(
            client=self.client,
            signing_secret=self.settings.signing_secret or "socket-mode-has-no-signing-secret",
            # HTTP mode verifies in bot.slack.gate, before parsing; Bolt would parse first, and
            # log the body of a request that fails its check
            request_verification_enabled=False,
            token_verification_enabled=False,
            ignoring_self_events_enabled=False,
            # the listener runs on the request's thread (it only acks and queues the work):
            # run in Bolt's listener pool instead, each ack waited for a free thread of it, and
            # the request's thread polled for the ack every 10 ms (slack_bolt's thread_runner),
            # a wait that grows with the GIL's load (bench/slack_ack.py)
            process_before_response=True,
            raise_error_for_unhandled_request=False,
            # lazy listeners only; there are none
            listener_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack-lazy"),
        )
        bolt.command("/flannel")(self._on_command)
        bolt.action("approve")(self._on_approve)
        bolt.action("deny")(self._on_deny)
        bolt.action(PLAN_FIX)(self._on_plan_fix)
        bolt.action("start_run")(self._on_start_run)
        return bolt

    # -- listeners: ack first, then the work ----------------------------------------------------

    def _on_command(self, ack: Ack, body: dict[str, Any], request: BoltRequest) -> None:
        ack()
        headers = request.headers
        timestamp = headers.get("x-slack-request-timestamp", [""])[0]
        retry = headers.get("x-slack-retry-num", ["0"])[0] not in ("", "0")
        self._later(self._command_once, body, request.raw_body, timestamp, retry)

    def _on_approve(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        self._later(self._button_once, body, "approve")

    def _on_deny(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        self._later(self._button_once, body, "deny")

    def _on_plan_fix(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        self._later(self._button_once, body, "plan_fix")

    def _on_start_run(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        self._later(self._button_once, body, "start_run")

    def _later(self, work: Callable[..., None], *args: Any) -> None:
        """`work` on a thread of the work pool. Never raises: the listener has acked already,
        and an exception would turn its answer into a 500 (Slack would deliver it again)."""

        def run() -> None:
            try:
                work(*args)
            except Exception:  # the user already has their ack; the log gets the rest
                log.exception("handling a Slack request failed")

        try:
            self.work.submit(run)
        except RuntimeError:  # the pool is shut down: serve is stopping
            log.exception("handling a Slack request failed")

    def _command_once(
        self, body: dict[str, Any], raw_body: str, timestamp: str, retry: bool
    ) -> None:
        keys = command_keys(body, raw_body, timestamp, retry=retry)
        with self.app.store.transaction() as tx:
            recorded = [tx.first_delivery(key, "slash_command") for key in keys]  # every key
        first = recorded[0]
        if first:
            self.command(body)
        else:
            log.info("ignoring a repeated Slack delivery %s", keys[0])

    def _button_once(self, body: dict[str, Any], kind: str) -> None:
        if not self._first(self._click_key(body), kind):
            return
        value = str(body["actions"][0]["value"])
        if kind in ("approve", "deny"):
            run_id, plan_hash = self._run_value(body)
            words = (
                ["approve", run_id, f"plan={plan_hash}"]
                if kind == "approve"
                else ["deny", run_id, "denied", "in", "Slack"]
            )
        else:
            asked = json.loads(value)
            params = [f"{k}={v}" for k, v in dict(asked.get("params") or {}).items()]
            words = (
                ["plan", str(asked["runbook"])]
                if kind == "plan_fix"
                else ["run", str(asked["ref"])]
            )
            words += params
            if asked.get("cluster"):
                words += ["--cluster", str(asked["cluster"])]
        self._click(body, words)

    # -- the work -------------------------------------------------------------------------------

    def command(self, body: dict[str, Any]) -> None:
        """A slash command: a thread in the channel, the reply in it; errors to the user only."""
        user_id, channel = str(body["user_id"]), str(body["channel_id"])
        text = str(body.get("text") or "help").strip() or "help"
        name = self._who(user_id)
        source = {
            "adapter": "slack",
            "team_id": team_of(body),
            "channel": channel,
            "user_id": user_id,
            "user": name,
            "identity": "slack",
        }
        try:
            parsed = c.parse(c.split_words(text))
        except UserError:
            self._ephemeral(
                channel, user_id, self.app.service.handle(text, Requester(name, source))
            )
            return
        if isinstance(parsed, c.Approve | c.Deny):
            refusal = self._origin_refusal(parsed.run_id, source)
            if refusal is not None:
                reply = self.app.service.refuse(text, Requester(name, source), refusal)
                self._ephemeral(channel, user_id, reply)
                return
        if isinstance(parsed, c.AuditReport) and not set(parsed.selection) & SCOPES:
            text += f" channel={channel}"  # in Slack a report covers this channel by default
            parsed = dataclasses.replace(parsed, selection={**parsed.selection, "channel": channel})
        root = self.client.chat_postMessage(
            channel=channel, text=f"<@{user_id}> asked: {mrkdwn_code(f'/flannel {text}', 2000)}"
        )
        thread_ts = str(root["ts"])
        source["thread_ts"] = thread_ts
        who = Requester(name, source)
        if self.heavy is not None and is_heavy(parsed):
            self._in_worker(self.heavy, text, who, parsed, channel, thread_ts, user_id)
            return
        self._replied(self.app.service.handle(text, who, parsed), channel, thread_ts, user_id, text)

    def _replied(
        self,
        reply: Reply,
        channel: str,
        thread_ts: str,
        user_id: str,
        command: str,
        rendered: tuple[dict[str, Any], str | None] | None = None,
    ) -> None:
        """A command's reply in its thread; an error to the requester alone, its thread gone."""
        if reply.kind == "error":
            self._quietly(lambda: self.client.chat_delete(channel=channel, ts=thread_ts))
            self._ephemeral(channel, user_id, reply)
            return
        self._answer(reply, channel, thread_ts, user_id, command, rendered)

    def _in_worker(
        self,
        pool: WorkerPool,
        text: str,
        who: Requester,
        parsed: c.Command,
        channel: str,
        thread_ts: str,
        user_id: str,
    ) -> None:
        """A heavy command, handled in a worker process; its reply is posted from here."""
        clock = self.app.engine.clock
        job = Job(text, who, parsed, self.app.engine.policy, f"<@{user_id}>", clock_offset(clock))

        def done(outcome: Outcome) -> None:
            self.app.store.announce(outcome.events)  # recorded there: counted here
            if outcome.died:  # it recorded the command; what became of it is recorded here
                self.app.store.record(
                    EventKind.COMMAND_FAILED,
                    actor=who.user,
                    source=who.source,
                    data={
                        "text": text,
                        "error": outcome.reply.data["message"],
                        "error_type": outcome.reply.data["error_type"],
                    },
                )
            self._replied(outcome.reply, channel, thread_ts, user_id, text, outcome.rendered)

        try:
            place = pool.submit(job, done)
        except QueueFull as busy:
            self._replied(
                self.app.service.refuse(text, who, busy), channel, thread_ts, user_id, text
            )
            return
        if place:
            workers = pool.workers
            self._quietly(
                lambda: self.client.chat_postMessage(
                    channel=channel,
                    thread_ts=thread_ts,
                    text=f"<@{user_id}> queued, number {place} in line: it starts when one "
                    f"of the {workers} running heavy commands (diagnose, audit) is free.",
                )
            )

    def _click(self, body: dict[str, Any], words: Sequence[str]) -> None:
        """A button: the same command grammar, in the thread the button sits in."""
        user_id = str(body["user"]["id"])
        channel = str((body.get("channel") or {}).get("id") or body["container"]["channel_id"])
        message = body.get("message") or {}
        container = body.get("container") or {}
        thread_ts = str(
            message.get("thread_ts") or container.get("thread_ts") or container["message_ts"]
        )
        name = self._who(user_id)
        source = {
            "adapter": "slack",
            "team_id": team_of(body),
            "channel": channel,
            "thread_ts": thread_ts,
            "user_id": user_id,
            "user": name,
            "message_ts": container.get("message_ts"),
            "identity": "slack",
        }
        if words[0] in ("approve", "deny"):  # words[1] is ASCII digits (_run_value)
            refusal = self._origin_refusal(int(words[1]), source, clicked=True)
            if refusal is not None:
                reply = self.app.service.refuse(list(words), Requester(name, source), refusal)
                self._ephemeral(channel, user_id, reply)
                return
        reply = self.app.service.handle(list(words), Requester(name, source))
        if reply.kind == "error":
            self._ephemeral(channel, user_id, reply)
            return
        self._answer(reply, channel, thread_ts, user_id, " ".join(words))

    def _answer(
        self,
        reply: Reply,
        channel: str,
        thread_ts: str,
        user_id: str,
        command: str,
        rendered: tuple[dict[str, Any], str | None] | None = None,
    ) -> None:
        """`rendered`: the message and snippet (Messages.answer), made by a worker already."""
        if reply.kind == "run":
            self.progress.poll()  # the progress and approval messages come from the events
            return
        if reply.kind == "audit_report":
            self._upload_report(reply, channel, thread_ts, user_id)
            return
        payload, snippet = rendered or self.messages.answer(reply, f"<@{user_id}>", command)
        self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, **payload)
        if snippet is not None:
            # what did not fit in 50 blocks goes to the thread whole, as a text snippet
            self._quietly(
                lambda: self.client.files_upload_v2(
                    channel=channel,
                    thread_ts=thread_ts,
                    content=snippet,
                    filename="flannel-diagnose.txt",
                    title="flannel diagnose: every finding with its evidence",
                )
            )

    def _upload_report(self, reply: Reply, channel: str, thread_ts: str, user_id: str) -> None:
        """The report as a file in the thread (files.getUploadURLExternal, then
        files.completeUploadExternal), with its summary as the message that carries it."""
        fmt, data = reply.data["format"], reply.data["report"]
        # rendered by the worker that built it, or here
        content = reply.data.get("content") or self.messages.renderer.reply(reply)
        s, chain = data["summary"], data["chain"]
        statuses = ", ".join(f"{n} {status}" for status, n in s["by_status"].items())
        summary = (
            f"<@{user_id}> audit report for {mrkdwn_escape(data['selection'])}: "
            f"{s['events']} events, {s['runs']} runs ({statuses or 'none'}), "
            f"{s['approvals']} approvals. Audit chain "
            + ("verified" if chain["ok"] else f"*BROKEN*: {mrkdwn_escape(chain['problem'])}")
            + f", head `{chain['head'][:16]}`."
        )
        self.client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            content=content,
            filename=f"flannel-audit-report.{fmt}",
            title=f"flannel-bot audit report ({data['selection']})",
            initial_comment=summary,
        )

    # -- helpers --------------------------------------------------------------------------------

    def _who(self, user_id: str) -> str:
        """The policy name of a Slack user, with Slack user groups folded into the policy."""
        policy = self.identity.policy(self.base_policy)
        with self._policy_lock:
            if self.app.engine.policy != policy:
                self.app.clusters.set_policy(policy)
        return self.identity.name(user_id)

    def _origin_refusal(
        self, run_id: int, source: dict[str, Any], clicked: bool = False
    ) -> UserError | None:
        """Why this approval or denial does not count where it came from (bot.slack.origin)."""
        try:
            run = self.app.store.run(run_id)
        except UserError:
            return None  # no such run: the service says so
        team = str(source["team_id"])
        if clicked:
            return click_refusal(run, team, str(source["channel"]))
        return command_refusal(run, team)

    def _first(self, key: str, kind: str) -> bool:
        with self.app.store.transaction() as tx:
            first = tx.first_delivery(key, kind)
        if not first:
            log.info("ignoring a repeated Slack delivery %s", key)
        return first

    @staticmethod
    def _click_key(body: dict[str, Any]) -> str:
        action = body["actions"][0]
        return f"action:{body['user']['id']}:{action.get('action_id')}:{action.get('action_ts')}"

    @staticmethod
    def _run_value(body: dict[str, Any]) -> tuple[str, str]:
        run_id, _, plan_hash = str(body["actions"][0]["value"]).partition(":")
        if not (run_id.isascii() and run_id.isdigit()):
            raise ValueError(f"approval button value {run_id!r} names no run")
        return run_id, plan_hash.removeprefix("sha256:")[:12]

    def _ephemeral(self, channel: str, user_id: str, reply: Reply) -> None:
        self._quietly(
            lambda: self.client.chat_postEphemeral(
                channel=channel, user=user_id, text=self.messages.error(reply)
            )
        )

    @staticmethod
    def _quietly(call: Any) -> None:
        try:
            call()
        except SlackApiError as exc:
            log.warning("Slack refused a call: %s", exc)
