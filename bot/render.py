"""Rendering replies and progress events with the jinja2 templates in `templates/`.

Templates are strict (`StrictUndefined`): a reply missing a field fails loudly in tests instead of
printing a blank to someone in the middle of an incident. Every template gets its data scrubbed of
secrets (`bot.redaction.scrub`) and plain-text output is redacted again as a whole, so no template,
report format or reply can show a secret a node, a log or a person handed the bot.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.utils import htmlsafe_json_dumps

from flannel_bot.ports.store import Event
from flannel_bot.redaction import redact, scrub
from flannel_bot.service import report
from flannel_bot.service.handler import Reply
from flannel_bot.service.report import Export

MARKERS = {"read": "[read]", "change": "[CHANGE]", "destructive": "[DESTRUCTIVE]"}


def csv_row(values: list[Any]) -> str:
    """One CSV line as RFC 4180 quotes it (commas, quotes and newlines inside fields)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if v is None else v for v in values])
    return out.getvalue()


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
        self.env.filters["csv_row"] = csv_row

    def reply(self, reply: Reply, medium: str = "shell") -> str:
        if reply.kind == "audit_report":
            if "export" in reply.data:
                out = io.StringIO()
                self.write_export(reply.data["export"], reply.data["format"], out.write)
                return out.getvalue()
            return self.report(reply.data["report"], reply.data["format"])
        return redact(self.render(f"{medium}/{reply.kind}.txt.j2", **reply.data).rstrip())

    def report(self, report: dict[str, Any], fmt: str) -> str:
        """An audit report in `md`, `html`, `csv` or `jsonl` (templates/reports/report.<fmt>.j2)."""
        return self.render(f"reports/report.{fmt}.j2", **report).strip() + "\n"

    def write_export(self, export: Export, fmt: str, write: Callable[[str], object]) -> None:
        """A JSON Lines or CSV report a line at a time, byte for byte what `report` renders from
        `build`'s data with templates/reports/report.<fmt>.j2, each line scrubbed of secrets
        as `render` scrubs the whole."""
        chain = export.header["chain"]
        if fmt == "jsonl":
            write(self._json({"type": "report", **export.header}) + "\n")
            for e in export.events():
                write(self._json(report.export_event(e)) + "\n")
            return
        write(csv_row(scrub(report.CSV_HEADER)) + "\n")
        for e in export.events():
            write(csv_row(scrub(report.export_row(e, export.tally, chain))) + "\n")

    def _json(self, value: Any) -> str:
        """jinja2's `tojson`, as the templates write JSON."""
        return str(
            htmlsafe_json_dumps(
                scrub(value),
                dumps=self.env.policies["json.dumps_function"],
                **self.env.policies["json.dumps_kwargs"],
            )
        )

    def event(self, event: Event, medium: str = "shell") -> str:
        return redact(
            self.render(f"{medium}/event.txt.j2", event=dataclasses.asdict(event)).strip()
        )

    def render(self, name: str, **data: Any) -> str:
        """Template `name` over `data` with every secret in it masked (unchanged data is not
        copied, so a large report costs one pass)."""
        return self.env.get_template(name).render(**scrub(data))
