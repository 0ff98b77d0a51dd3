"""Named error types.

`UserError`s are shown to the person who typed the command, as one sentence that says what to do
next; everything else is a bug or an outage and is recorded with its traceback.
"""

from __future__ import annotations


class BotError(Exception):
    """Root of every error flannel-bot raises on purpose."""


class UserError(BotError):
    """Something the requester can fix: shown without a traceback."""


class CommandSyntaxError(UserError):
    """The command text does not parse; carries the usage line of the command it looked like."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class UnknownRunbook(UserError):
    pass


class ParameterError(UserError):
    pass


class UnknownNode(ParameterError):
    pass


class UnknownRun(UserError):
    pass


class NotAllowed(UserError):
    """Policy refused: the message names the role that would be needed."""


class ApprovalRefused(UserError):
    """An approval that cannot count: self-approval, expired, stale plan, wrong state."""


class InvalidState(UserError):
    """The run is not in a state where that command makes sense."""


class TargetBusy(UserError):
    """Another run holds the change lock on a target."""


class ExecutorError(BotError):
    """An executor could not do what was asked; the message names the node or API call."""


class NotFound(ExecutorError):
    pass


class RunbookLockMismatch(BotError):
    """Runbook code changed without a version bump."""


class AuditChainBroken(BotError):
    """The audit log's hash chain does not verify."""
