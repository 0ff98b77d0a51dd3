"""`serve`'s log lines: whatever a logged value holds (newlines, carriage returns, terminal
escapes), each record is one line in text format and one JSON object in JSON format, so no value
can write a line that looks like a record of its own."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from flannel_bot.process.logs import configure

FORGED = "x\n2030-01-01 00:00:00,000 INFO bot.slack.app: approved by alice"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def lines_logged(capsys: pytest.CaptureFixture[str], fmt: str, *values: object) -> list[str]:
    configure(fmt)  # binds the handler to the captured stderr
    log = logging.getLogger("bot.test")
    log.info("asked: %s", values[0])
    try:
        raise ValueError(f"bad value {values[-1]}")
    except ValueError:
        log.exception("failed on %s", values[-1])
    return capsys.readouterr().err.splitlines()


def test_a_text_record_is_one_line_whatever_its_values_hold(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = FORGED + "\r\x1b[2K\u2028\x85\x00"
    lines = lines_logged(capsys, "text", hostile)
    assert lines[0].endswith(
        "INFO bot.test: asked: x\\n2030-01-01 00:00:00,000 INFO bot.slack.app: approved by "
        "alice\\r\\x1b[2K\\u2028\\x85\\x00"
    )
    assert [line for line in lines if RECORD_START.match(line)] == [lines[0], lines[1]]
    # the traceback follows its record, each of its lines marked as a continuation
    assert lines[1].endswith("ERROR bot.test: failed on " + lines[0].split("asked: ")[1])
    assert all(line.startswith("  | ") for line in lines[2:]), lines[2:]
    assert "  | ValueError: bad value x" in lines
    assert lines[-1] == "  | 2030-01-01 00:00:00,000 INFO bot.slack.app: approved by alice" + (
        "\\r\\x1b[2K\\u2028\\x85\\x00"
    )
    assert not any(c in "\r\x1b\x00\x85\u2028" for line in lines for c in line)


def test_a_json_record_is_one_object_with_the_values_as_they_were(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = lines_logged(capsys, "json", FORGED)
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == f"asked: {FORGED}"
    assert second["exception"].endswith(f"ValueError: bad value {FORGED}")
