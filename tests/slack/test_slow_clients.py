"""Slow clients against HTTP mode's real server: a connection that never finishes its request is
closed after the read timeout, holds no thread meanwhile, and a signed command is answered while
hundreds of them are open."""

from __future__ import annotations

import threading
import time

import pytest

from tests.slack.conftest import CONFIG, SlackBot
from tests.slack.wire import closed_within, half_open, trickled

TIMEOUT = 1.0


@pytest.fixture
def bot_config() -> str:
    limits = f"[slack]\nread_timeout_seconds = {TIMEOUT}\nhttp_threads = 4\n"
    return CONFIG.replace("[slack]\n", limits)


def test_a_half_open_connection_is_closed_after_the_read_timeout(bot: SlackBot) -> None:
    (conn,) = half_open(bot.url, 1)
    with conn:
        closed_after = closed_within(conn, TIMEOUT + 10)
    assert closed_after is not None, "the server kept a half-sent request open"
    assert closed_after >= TIMEOUT * 0.9


def test_a_client_that_trickles_its_request_is_closed_after_the_read_timeout(
    bot: SlackBot,
) -> None:
    # never silent for the read timeout, so only a deadline for the whole request ends it
    closed_after = trickled(bot.url, every=TIMEOUT / 4, seconds=TIMEOUT + 10)
    assert closed_after is not None, "the server kept a trickling request open"
    assert closed_after >= TIMEOUT * 0.9


def test_half_open_connections_hold_no_thread_and_a_command_is_still_answered(
    bot: SlackBot,
) -> None:
    assert bot.command("help").status == 200  # the pools that start lazily have started
    bot.messages(2)
    before = threading.active_count()
    conns = half_open(bot.url, 300)
    try:
        time.sleep(0.3)
        assert threading.active_count() - before < 5  # not one per connection
        started = time.monotonic()
        assert bot.command("status").status == 200
        assert time.monotonic() - started < 3.0  # Slack's limit for the ack
        bot.messages(4)
        assert threading.active_count() - before < 5
    finally:
        for conn in conns:
            conn.close()
