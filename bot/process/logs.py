"""Logging for `serve`: plain lines for a terminal, JSON Lines for a log pipeline.

`FLANNEL_BOT_LOG_FORMAT=json` (the container image's default) writes one JSON object per line
with time, level, logger, message and any exception, which Loki, Elasticsearch or `jq` read
without parsing rules.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from bot.redaction import redact


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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    redacting(handler)
