"""The Slack app over its real protocol: signed HTTP requests in, Web API calls out to a fake.

Every request here is built from Slack's real payload shapes and signed as Slack signs them; the
app answers through `slack_sdk` against `tests/slack/fake_slack.py` on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flannel_bot.errors import UnknownRun
from flannel_bot.slack.blocks import check_limits
from tests.slack.conftest import SECRET, SlackBot
from tests.slack.signing import sign, slash_command_body

RUN = "flannel.restart-pods@1.1.0"  # the recorded cluster: w2's flannel pod crash-loops


def approval_value(bot: SlackBot) -> tuple[str, str]:
    """The Approve button's value and the approval message's ts."""
    for c in bot.slack.calls("chat.postMessage"):
        for block in c.params.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("action_id") == "approve":
                    return str(element["value"]), c.params["thread_ts"]
    raise AssertionError("no approval message was posted")


def wait_status(bot: SlackBot, run_id: int, status: str, timeout: float = 10.0) -> None:
    """Wait for the run (which the acked command may not have created yet) to reach `status`."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = bot.adapter.app.store.run(run_id)
        except UnknownRun:
            seen = None
        if seen is not None and seen.status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not reach {status}: {seen}")


def start_run(bot: SlackBot) -> tuple[str, str]:
    assert bot.command(f"run {RUN} nodes=w2").status == 200
    bot.message_with("Approve")
    return approval_value(bot)


def test_bad_and_stale_signatures_are_rejected_and_nothing_runs(bot: SlackBot) -> None:
    body = slash_command_body("diagnose", user_id="UALICE")
    forged = sign("not-the-secret", body)
    assert bot.post(body, forged).status == 401
    stale = sign(SECRET, body, timestamp=int(time.time()) - 6 * 60)
    assert bot.post(body, stale).status == 401
    assert bot.post(body, {"Content-Type": "application/x-www-form-urlencoded"}).status == 401
    time.sleep(0.3)
    assert bot.slack.calls("chat.postMessage") == []
    assert [e.kind for e in bot.adapter.app.store.events()] == []


def test_the_ack_arrives_before_the_slow_work_finishes(bot: SlackBot) -> None:
    bot.slack.delay("chat.postMessage", 1.5)
    started = time.monotonic()
    response = bot.command("diagnose")
    acked = time.monotonic()
    assert response.status == 200
    posted = bot.slack.wait_for("chat.postMessage", 2, timeout=10)
    # the reply was still being posted (each post takes 1.5 s) when Slack got its ack
    assert acked < posted[1].at + 1.5
    assert acked - started < posted[1].at + 1.5 - started


def test_a_slash_command_gets_a_threaded_report_mentioning_the_requester(bot: SlackBot) -> None:
    assert bot.command("diagnose").status == 200
    root, reply = bot.messages(2)
    assert root["channel"] == "C1" and "<@UALICE>" in root["text"] and "thread_ts" not in root
    assert reply["thread_ts"] and reply["channel"] == "C1"
    assert check_limits(reply) == []
    text = json.dumps(reply["blocks"])
    assert "<@UALICE>" in text and "flannel-crashloop" in text and "plan_fix:0" in text


def test_errors_go_to_the_requester_alone(bot: SlackBot) -> None:
    bot.command("frobnicate w2")
    bot.command("run flannel.restart-pods@1.1.0 nodes=w9")
    ephemeral = bot.slack.wait_for("chat.postEphemeral", 2)
    texts = sorted(str(c.params["text"]) for c in ephemeral)
    assert "unknown command `frobnicate`" in texts[0] + texts[1]
    assert "node `w9` is not in the cluster" in texts[0] + texts[1]
    assert all(c.params["user"] == "UALICE" for c in ephemeral)
    time.sleep(0.3)
    # the second posted a thread root before it failed, and took it back
    roots = bot.slack.calls("chat.postMessage")
    deleted = bot.slack.calls("chat.delete")
    assert len(roots) == len(deleted) <= 1


def test_a_non_approver_and_the_requester_are_refused_with_the_role_needed(
    bot: SlackBot,
) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UMAL", message_ts)
    bot.click("approve", value, "UALICE", message_ts)
    refusals = [str(c.params["text"]) for c in bot.slack.wait_for("chat.postEphemeral", 2)]
    assert any("mallory may not approve" in t and "group `approvers`" in t for t in refusals)
    assert any("alice requested this run and cannot approve it" in t for t in refusals)
    assert bot.adapter.app.store.run(1).status == "awaiting_approval"


def test_one_click_delivered_three_times_at_once_runs_the_step_once(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    action_ts = "1700000000.123456"
    with ThreadPoolExecutor(3) as pool:
        responses = list(
            pool.map(
                lambda _: bot.click("approve", value, "UBOB", message_ts, action_ts=action_ts),
                range(3),
            )
        )
    assert [r.status for r in responses] == [200, 200, 200]
    wait_status(bot, 1, "succeeded")
    store = bot.adapter.app.store
    deletes = [
        e
        for e in store.events(run_id=1)
        if e.kind == "action_finished" and e.data["render"].startswith("DELETE")
    ]
    assert len(deletes) == 1
    assert [e.kind for e in store.events(run_id=1)].count("approved") == 1
    # the approval message now says who approved, and has no buttons left
    decided = bot.message_with("Approved by <@UBOB>")
    assert "approve" not in json.dumps(decided.get("blocks"))
    # a second, separate click by the same approver is told the run is no longer waiting
    bot.click("approve", value, "UBOB", message_ts)
    late = bot.slack.wait_for("chat.postEphemeral", 1)
    assert "there is nothing to approve" in str(late[0].params["text"])


def test_progress_is_one_message_updated_in_place_with_the_audit_entry(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UBOB", message_ts)
    wait_status(bot, 1, "succeeded")
    final = bot.message_with("Audit trail")
    assert "/flannel audit run 1" in json.dumps(final)
    progress = [
        c
        for c in bot.slack.calls()
        if c.method in ("chat.postMessage", "chat.update") and "*Run 1*" in json.dumps(c.params)
    ]
    posted = [c for c in progress if c.method == "chat.postMessage"]
    assert len(posted) == 1 and len(progress) >= 2  # posted once, then updated
    # a burst of events is coalesced into fewer updates than there were events
    assert len(progress) < len(bot.adapter.app.store.events(run_id=1))
    assert all(c.params.get("ts") == progress[-1].params.get("ts") for c in progress[1:])


def test_deny_ends_the_run(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("deny", value, "UBOB", message_ts)
    wait_status(bot, 1, "denied")
    bot.message_with("Denied by <@UBOB>")


def test_an_expired_approval_is_refused(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.clock.advance(31 * 60)
    bot.click("approve", value, "UBOB", message_ts)
    refusal = bot.slack.wait_for("chat.postEphemeral", 1)
    assert "approval window of run 1 closed" in str(refusal[0].params["text"])
    assert bot.adapter.app.store.run(1).status == "expired"


def test_a_slack_user_group_member_may_approve(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UCAROL", message_ts)  # carol is in SAPPROVERS, not in config
    wait_status(bot, 1, "succeeded")
    assert bot.slack.calls("usergroups.users.list")


def test_a_retried_slash_command_is_done_once(bot: SlackBot) -> None:
    body = slash_command_body("diagnose", user_id="UALICE")
    for retry in ("", "1", "2"):
        headers = sign(SECRET, body) | ({"X-Slack-Retry-Num": retry} if retry else {})
        assert bot.post(body, headers).status == 200
    bot.messages(2)
    time.sleep(0.5)
    assert len(bot.slack.calls("chat.postMessage")) == 2  # one root, one report


def test_a_429_is_retried_after_retry_after(bot: SlackBot) -> None:
    bot.slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    bot.command("help")
    calls = bot.slack.wait_for("chat.postMessage", 3)
    assert calls[0].rate_limited and not calls[1].rate_limited
    assert calls[1].at - calls[0].at >= 0.9


def test_approving_in_the_shell_updates_the_slack_thread(bot: SlackBot) -> None:
    from flannel_bot.ports.store import Requester

    start_run(bot)
    engine = bot.adapter.app.engine
    threading.Thread(
        target=engine.approve, args=(1, Requester("bob", {"adapter": "shell", "user": "bob"}))
    ).start()
    wait_status(bot, 1, "succeeded")
    bot.message_with("Approved by @bob")


def test_plan_fix_button_posts_the_plan_and_start_run_starts_it(bot: SlackBot) -> None:
    bot.command("diagnose")
    report = bot.messages(2)[1]
    button = next(
        e
        for b in report["blocks"]
        for e in b.get("elements") or []
        if str(e.get("action_id", "")).startswith("plan_fix:")
    )
    bot.click(button["action_id"], button["value"], "UALICE", report["thread_ts"])
    plan = bot.message_with("Start run")
    assert check_limits(plan) == []
    start = next(
        e for b in plan["blocks"] for e in b.get("elements") or [] if e["action_id"] == "start_run"
    )
    bot.click("start_run", start["value"], "UALICE", report["thread_ts"])
    bot.message_with("Waiting for approval")
    assert bot.adapter.app.store.run(1).status == "awaiting_approval"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", "/flannel diagnose [node...]"),
        ("runbooks", "node.fix-br-netfilter@1.0.0"),
        ("status", "No runs yet"),
        ("audit verify", "audit chain OK"),
        ("audit", "command"),
    ],
)
def test_every_other_reply_fits_block_kit(bot: SlackBot, text: str, expected: str) -> None:
    bot.command(text)
    reply = bot.messages(2)[1]
    assert check_limits(reply) == [], check_limits(reply)
    assert reply["blocks"][0]["text"]["text"].startswith(f"<@UALICE> `/flannel {text}`")
    assert expected in json.dumps(reply["blocks"][1:])


def test_findings_that_do_not_fit_go_to_the_thread_as_a_file(bot: SlackBot) -> None:
    from flannel_bot.service.handler import Reply
    from tests.unit.test_diagnose_templates import many_findings, reply_data

    data = reply_data(many_findings(80), gaps=[])
    bot.adapter._answer(Reply("diagnose", data), "C1", "1700000000.000001", "UALICE", "diagnose")
    message = bot.slack.wait_for("chat.postMessage")[0].params
    assert check_limits(message) == [] and "attached below" in json.dumps(message)
    done = bot.slack.wait_for("files.completeUploadExternal")[0].params
    assert done["channel_id"] == "C1" and done["thread_ts"] == "1700000000.000001"
    (content,) = bot.slack.uploads.values()
    assert b"finding 79 on w79" in content


def test_the_audit_report_goes_to_the_thread_as_a_file_with_a_summary(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UBOB", message_ts)
    wait_status(bot, 1, "succeeded")
    bot.command("audit report format=html")
    done = bot.slack.wait_for("files.completeUploadExternal")[0].params
    assert done["channel_id"] == "C1" and done["thread_ts"]
    comment = str(done["initial_comment"])
    assert "<@UALICE> audit report for channel C1" in comment and "1 succeeded" in comment
    assert "Audit chain verified" in comment
    (html,) = bot.slack.uploads.values()
    assert b"Run 1: <code>flannel.restart-pods@1.1.0</code>" in html
    assert b"approved by <b>bob</b>" in html


def test_the_chain_head_is_posted_after_each_run(bot: SlackBot) -> None:
    value, message_ts = start_run(bot)
    bot.click("approve", value, "UBOB", message_ts)
    wait_status(bot, 1, "succeeded")
    deadline = time.monotonic() + 10
    while not (
        posts := [c for c in bot.slack.calls("chat.postMessage") if c.params["channel"] == "CAUDIT"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    text = str(posts[0].params["text"])
    assert text.startswith("Audit chain head after run 1: `") and "verified" in text
    head = text.split("`")[1]
    events = bot.adapter.app.store.events()
    assert head in {e.hash for e in events}  # a real head of the chain at that moment


def test_acks_never_wait_behind_earlier_commands_work(bot: SlackBot) -> None:
    """More slow commands at once than there are workers (16): every ack is back before the
    17th command's work can start, which waits for a worker's first 1-second post to end.
    Were acks queued behind work, the last ones would come after that."""
    bot.slack.delay("chat.postMessage", 1.0)
    acked: list[float] = []

    def send(_: int) -> None:
        assert bot.command("help").status == 200
        acked.append(time.monotonic())

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(send, range(40)))
    posts = bot.slack.wait_for("chat.postMessage", 80, timeout=30)
    roots = sorted(c.at for c in posts if "thread_ts" not in c.params)
    assert len(roots) == 40
    assert max(acked) < roots[16]


def test_the_ack_needs_no_thread_of_bolts_listener_pool(bot: SlackBot) -> None:
    """The listener acks on the thread that received the request: with every thread of Bolt's
    listener pool held (by a real event), a command is still answered 200 and done. A listener
    run in that pool would get no thread, and Bolt would answer 404 after waiting 3 s."""
    executor = bot.adapter.bolt.listener_runner.listener_executor
    held = threading.Event()
    started = threading.Semaphore(0)
    workers = getattr(executor, "_max_workers", 16)

    def hold() -> None:
        started.release()
        held.wait(30)

    try:
        for _ in range(workers):
            executor.submit(hold)
        for _ in range(workers):
            assert started.acquire(timeout=10)
        assert bot.command("help").status == 200
        assert "thread_ts" in bot.messages(2)[1]  # the work was done too
    finally:
        held.set()


def test_a_command_whose_work_cannot_be_queued_is_still_acked(
    bot: SlackBot, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the work pool is shut down (serve is stopping), the ack is still 200: what fails
    after the ack is logged, never turned into an error answer that makes Slack retry."""
    bot.adapter.work.shutdown(wait=True)
    assert bot.command("help").status == 200
    assert "handling a Slack request failed" in caplog.text


class HeldVerify:
    """The adapter's store, whose chain verification waits until `release` is set: a verify
    of a long audit log takes seconds."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.started = threading.Event()
        self.release = threading.Event()

    def verify(self) -> Any:
        self.started.set()
        assert self.release.wait(30)
        return self.store.verify()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def audit_heads(bot: SlackBot) -> list[Any]:
    return [c for c in bot.slack.calls("chat.postMessage") if c.params["channel"] == "CAUDIT"]


def test_posting_the_audit_head_holds_up_neither_acks_nor_replies(bot: SlackBot) -> None:
    """The head is posted after each run, and it verifies the whole chain first: while that
    verification is held, a command is still acked and answered."""
    held = HeldVerify(bot.adapter.app.store)
    bot.adapter.beacon.store = held
    try:
        bot.adapter.progress.on_final(1)  # what a run reaching its end does
        assert held.started.wait(10)
        assert bot.command("help").status == 200
        assert "thread_ts" in bot.messages(2)[1]
        assert not audit_heads(bot)
    finally:
        held.release.set()
    deadline = time.monotonic() + 10
    while not audit_heads(bot):
        assert time.monotonic() < deadline
        time.sleep(0.05)
