"""Logging for `serve`: plain lines for a terminal, JSON Lines for a log pipeline.

`FLANNEL_BOT_LOG_FORMAT=json` (the container image's default) writes one JSON object per line
with time, level, logger, message and any exception, which Loki, Elasticsearch or `jq` read
without parsing rules.

In text format a record is one line too: a logged value may come from outside (a Slack user's
text, an error quoting it), so its control characters are written escaped, and the lines of a
traceback are marked as a continuation. No value can then start a line that reads as a record.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from flannel_bot.redaction import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTINUATION = "  | "
# C0 and C1 controls, DEL, and Unicode's own line and paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """`text` on one line: newlines as `\\n`, other control characters as `\\xNN`/`\\uNNNN`."""
    return _CONTROL.sub(lambda m: _NAMED.get(m[0]) or repr(m[0])[1:-1], text)


class TextFormatter(logging.Formatter):
    """Plain lines that a logged value cannot break or forge."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            for part in block.split("\n"):  # a traceback's lines; other controls are escaped
                line += "\n" + CONTINUATION + escape_controls(part)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Secrets out of a record's message before any formatter or handler sees it: a logged Slack
    request, an error quoting a node's output or a kubeconfig can hold one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when it formats
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class RedactingFormatter(logging.Formatter):
    """Another formatter's output redacted whole, tracebacks and stack traces included."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def redacting(handler: logging.Handler) -> logging.Handler:
    """`handler` with its records' messages and its formatted output redacted."""
    handler.addFilter(RedactingFilter())
    handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter()))
    return handler


def configure(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    redacting(handler)
