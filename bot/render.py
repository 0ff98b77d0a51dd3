"""Rendering replies and progress events with the jinja2 templates in `templates/`.

Templates are strict (`StrictUndefined`): a reply missing a field fails loudly in tests instead of
printing a blank to someone in the middle of an incident.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jinja2

from bot import slack_blocks
from bot.core.service import Reply
from bot.store.database import Event

MARKERS = {"read": "[read]", "change": "[CHANGE]", "destructive": "[DESTRUCTIVE]"}


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - plain-text terminal output; Slack/HTML templates escape
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["markers"] = MARKERS
        slack_blocks.register(self.env)

    def reply(self, reply: Reply, medium: str = "shell") -> str:
        return self.env.get_template(f"{medium}/{reply.kind}.txt.j2").render(**reply.data).rstrip()

    def event(self, event: Event, medium: str = "shell") -> str:
        return (
            self.env.get_template(f"{medium}/event.txt.j2")
            .render(event=dataclasses.asdict(event))
            .strip()
        )

    def render(self, name: str, **data: Any) -> str:
        return self.env.get_template(name).render(**data)
