"""Chat message bodies for Slack, rendered from `templates/slack/` and held to Block Kit's limits.

A body that would break a limit is never sent as is (Slack rejects the whole message): it is
replaced by its fallback text in one section, with a note, and the problems are logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flannel_bot.redaction import scrub
from flannel_bot.render import Renderer
from flannel_bot.service.handler import Reply
from flannel_bot.slack.blocks import (
    check_limits,
    mrkdwn,
    mrkdwn_escape,
    register,
    render_diagnose_slack,
    truncate,
)

log = logging.getLogger(__name__)
OWN_LAYOUT = {"diagnose", "plan"}


class Messages:
    def __init__(self, templates: Path) -> None:
        """The renderer of `templates`, with the filters and globals Slack's templates use."""
        self.renderer = Renderer(templates)
        register(self.renderer.env)

    def _render(self, template: str, **data: Any) -> dict[str, Any]:
        payload = json.loads(self.renderer.render(f"slack/{template}.json.j2", **data))
        return self.fit(payload)

    @staticmethod
    def fit(payload: dict[str, Any]) -> dict[str, Any]:
        problems = check_limits(payload)
        if not problems:
            return payload
        log.error("Slack message over Block Kit limits, sending text only: %s", problems)
        text = truncate(str(payload.get("text") or "(no text)"), 2900)
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(text, 2900)}},
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": "(shortened: the full message broke a limit)"}
                    ],
                },
            ],
        }

    def reply(self, reply: Reply, mention: str, command: str) -> dict[str, Any]:
        """A command's reply for its thread."""
        if reply.kind == "diagnose":
            lead = {"type": "section", "text": {"type": "mrkdwn", "text": f"{mention} here it is:"}}
            return self.fit(render_diagnose_slack(self.renderer.env, scrub(reply.data), [lead]))
        if reply.kind == "plan":
            return self.plan(reply.data, mention, start_value=self.start_value(reply.data))
        return self.text(
            f"`/flannel {mrkdwn(command, 200)}`", self.renderer.reply(reply), mention, command
        )

    def answer(self, reply: Reply, mention: str, command: str) -> tuple[dict[str, Any], str | None]:
        """A command's reply for its thread, and for a diagnose whose findings did not all fit
        in the message, every finding with its evidence as a text snippet to attach."""
        payload = self.reply(reply, mention, command)
        left_out = reply.kind == "diagnose" and self.findings_left_out(payload, reply.data)
        return payload, self.renderer.reply(reply) if left_out else None

    def text(self, title: str, body: str, mention: str, command: str) -> dict[str, Any]:
        """Terminal output as code blocks within the limits; what does not fit is counted."""
        return self._render("text", title=title, body=body, mention=mention, command=command)

    @staticmethod
    def findings_left_out(payload: dict[str, Any], data: dict[str, Any]) -> int:
        """How many findings of a diagnose reply did not fit in its message."""
        shown = sum(
            1
            for b in payload.get("blocks", [])
            if str(b.get("block_id", "")).startswith("finding:")
            and not str(b.get("block_id", "")).endswith(":fix")
        )
        return max(len(data.get("findings", [])) - shown, 0)

    @staticmethod
    def start_value(plan: dict[str, Any]) -> str | None:
        """What the "Start run" button carries: the runbook ref, its raw parameters, and the
        cluster the plan was made on."""
        params = {k: _raw(v) for k, v in plan["params"].items() if _raw(v) != ""}
        value = json.dumps(
            {"ref": plan["ref"], "params": params, "cluster": plan.get("cluster")},
            separators=(",", ":"),
        )
        return value if len(value) <= 2000 else None

    def plan(self, plan: dict[str, Any], mention: str, start_value: str | None) -> dict[str, Any]:
        return self._render("plan", plan=plan, mention=mention, start_value=start_value)

    def approval(self, run: dict[str, Any], requester: str, decision: str) -> dict[str, Any]:
        return self._render("approval", run=run, requester_mention=requester, decision=decision)

    def progress(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._render("progress", p=p)

    def error(self, reply: Reply) -> str:
        """An error for the requester alone; it may quote what they typed, escaped."""
        usage = reply.data.get("usage")
        message = mrkdwn_escape(str(reply.data["message"]))
        return f":warning: {message}" + (f"\n`{mrkdwn_escape(str(usage))}`" if usage else "")


def _raw(value: Any) -> str:
    """A parameter's value as the command line would give it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
