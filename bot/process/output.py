"""What flannel-bot prints on a terminal, with secrets redacted.

Why: `diagnose`, `run`, `audit report` and the shell print what nodes and pods said, and a
terminal gets screen-shared, scrolled back and pasted into tickets. `redacted_output` wraps a
command's whole run: every reply, progress line, error, `print` and log record on stdout and
stderr passes through `bot.redaction.redact`, so nothing added later can print around it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import threading
from collections.abc import Callable, Iterator
from typing import ParamSpec, TextIO, TypeVar

from flannel_bot.redaction import redact

P = ParamSpec("P")
R = TypeVar("R")


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what it passes on.

    Writes are held until a newline ends one (or a flush), then redacted together: `print(a, b)`
    arrives in four writes, and a secret split between them would otherwise pass. A whole reply
    written at once stays one unit, so a private key spanning lines is seen whole.
    """

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner
        self._held: list[str] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._held.append(text)
            if text.endswith("\n"):
                self._pass_on()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._pass_on()
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    def _pass_on(self) -> None:
        if self._held:
            text, self._held = "".join(self._held), []
            self.inner.write(redact(text))


@contextlib.contextmanager
def redacted_stdio() -> Iterator[None]:
    """stdout and stderr redacted for the duration (what is held is passed on at the end)."""
    out, err = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.flush()
        err.flush()


def redacted_output(command: Callable[P, R]) -> Callable[P, R]:
    """`command` (a CLI entry point) with everything it prints redacted."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with redacted_stdio():
            return command(*args, **kwargs)

    return run
