"""The `Status` answers the real server gives, as one exception the HTTP layer serialises.

A refusal (404, 409, 422, 403, ...) is raised where it is found, worded like the real server's,
so clients parse the body they would get from a cluster. It is `StatusError`, not `ApiError`:
`bot.errors.ApiError` is what the bot's executor raises on receiving such an answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flannel_bot.errors import BotError

if TYPE_CHECKING:
    from flannel_bot.lab.apiserver.resources import Obj, Resource


class StatusError(BotError):
    """A failure the real server would answer with this `Status`; `status` is the body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = dict(details)

    @classmethod
    def not_found(cls, res: Resource, name: str) -> StatusError:
        return cls(404, "NotFound", f'{res.qualified} "{name}" not found', res.details(name))

    @classmethod
    def already_exists(cls, res: Resource, name: str) -> StatusError:
        return cls(
            409, "AlreadyExists", f'{res.qualified} "{name}" already exists', res.details(name)
        )

    @classmethod
    def conflict(cls, res: Resource, name: str, why: str | None = None) -> StatusError:
        why = why or (
            "the object has been modified; please apply your changes to the latest version and "
            "try again"
        )
        message = f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}'
        return cls(409, "Conflict", message, res.details(name))

    @classmethod
    def invalid(
        cls, res: Resource, name: str, causes: Sequence[tuple[str, str, str]]
    ) -> StatusError:
        """`causes` are (field, reason, text), e.g. ("spec.x", "FieldValueRequired", ...)."""
        texts = [f"{f}: {text}" for f, _, text in causes]
        joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        kind = f"{res.kind}.{res.group}" if res.group else res.kind
        details: Obj = {"name": name} if name else {}
        if res.group:
            details["group"] = res.group
        details["kind"] = res.kind
        details["causes"] = [{"reason": r, "message": text, "field": f} for f, r, text in causes]
        return cls(422, "Invalid", f'{kind} "{name}" is invalid: {joined}', details)

    @classmethod
    def bad_request(cls, message: str) -> StatusError:
        return cls(400, "BadRequest", message)

    @classmethod
    def no_route(cls) -> StatusError:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    @classmethod
    def method_not_allowed(cls) -> StatusError:
        return cls(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            {},
        )
