"""The one way out to Slack: a Web API client that redacts secrets and defuses mrkdwn on the way.

Why: a diagnose reply once posted a private key from a probe's stderr to a public channel, and a
user's `<!channel>` echoed back pinged everyone. Templates escape and redact what they are given,
but a new message, a new field or a new call could forget to. Every request of this client passes
through `outgoing` in `api_call` (the method every Web API call ends in) and every uploaded file
through `redact`, so nothing the adapter sends can skip either. The token a request carries to
Slack itself is left alone.
"""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.web import SlackResponse

from flannel_bot.errors import BotError
from flannel_bot.redaction import redact, scrub
from flannel_bot.slack.blocks import defuse

# the credential a request presents to Slack (apps.connections.open sends the app token so)
_CREDENTIALS = frozenset({"token"})
# fields Slack reads as mrkdwn at a request's top level; inside blocks, {"type": "mrkdwn", ...}
_MRKDWN_FIELDS = ("text", "initial_comment")


class UnredactableUpload(BotError):
    """A file handed to Slack by path or handle, whose text this client cannot redact."""


def _defused(value: Any) -> Any:
    if isinstance(value, list):
        return [_defused(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _defused(v) for k, v in value.items()}
    if out.get("type") == "mrkdwn" and isinstance(out.get("text"), str):
        out["text"] = defuse(out["text"])
    return out


def outgoing(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's fields as they may leave: secrets redacted, and mrkdwn that can only mention
    the users the bot itself names (no `<!channel>`, no disguised links)."""
    if payload is None:
        return None
    out = {k: v if k in _CREDENTIALS else _defused(scrub(v)) for k, v in payload.items()}
    for key in _MRKDWN_FIELDS:
        if isinstance(out.get(key), str):
            out[key] = defuse(out[key])
    return out


def _redacted_content(content: Any) -> str:
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnredactableUpload(
                "a file for Slack is not UTF-8 text, so it cannot be checked for secrets: "
                "upload text only"
            ) from exc
    if not isinstance(content, str):
        raise UnredactableUpload(
            f"a file for Slack came as {type(content).__name__}, which cannot be checked for "
            "secrets: pass its text as content="
        )
    return redact(content)


class SafeWebClient(WebClient):
    """slack_sdk's WebClient, with every request and upload made safe to post (`outgoing`)."""

    def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> SlackResponse:
        if files:
            raise UnredactableUpload(
                f"{api_method} was given files={sorted(files)}, which cannot be checked for "
                "secrets: upload text with files_upload_v2(content=...)"
            )
        return super().api_call(
            api_method,
            http_verb=http_verb,
            data=outgoing(data),
            params=outgoing(params),
            json=outgoing(json),
            headers=headers,
            auth=auth,
        )

    def files_upload_v2(self, **kwargs: Any) -> SlackResponse:
        """The upload, with each file's text redacted before its length is taken."""
        if kwargs.get("file") is not None:
            raise UnredactableUpload(
                "files_upload_v2 was given file=, which cannot be checked for secrets: pass "
                "the text as content="
            )
        if kwargs.get("content") is not None:
            kwargs["content"] = _redacted_content(kwargs["content"])
        if kwargs.get("file_uploads") is not None:
            uploads = []
            for upload in kwargs["file_uploads"]:
                if upload.get("file") is not None or upload.get("content") is None:
                    raise UnredactableUpload(
                        "files_upload_v2 was given a file upload without content=, which "
                        "cannot be checked for secrets"
                    )
                uploads.append({**upload, "content": _redacted_content(upload["content"])})
            kwargs["file_uploads"] = uploads
        for key in ("title", "filename", "initial_comment", "alt_txt"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = redact(kwargs[key])
        return super().files_upload_v2(**kwargs)
