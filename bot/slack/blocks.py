"""Slack's Block Kit limits and mrkdwn escaping, as small pure functions for the Slack templates.

Slack rejects a whole message (`invalid_blocks`) when one field is over its limit, and an unescaped
`<` in a log line can turn cluster output into a mention or a link. The templates in
`templates/slack/` decide the layout; these functions keep every piece escaped and within its
limit, and `check_limits` lets tests (and the adapter, before posting) prove the result fits.
Lengths are counted in code points, as Slack's documentation states them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jinja2

ELLIPSIS: Final = "…"
FENCE: Final = "```"


@dataclass(frozen=True)
class SlackLimits:
    blocks: int = 50
    section_text: int = 3000
    section_fields: int = 10
    field_text: int = 2000
    header_text: int = 150
    context_elements: int = 10
    context_text: int = 3000
    actions_elements: int = 25
    button_text: int = 75
    action_id: int = 255
    button_value: int = 2000
    button_url: int = 3000
    block_id: int = 255
    # Slack truncates the notification text beyond this rather than rejecting the message.
    fallback_text: int = 40000


LIMITS: Final = SlackLimits()
_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
# a backtick followed by another: a run of three would close the code block early
_BACKTICK_RUN = re.compile(r"`(?=`)")


def truncate(text: str, limit: int, marker: str = ELLIPSIS) -> str:
    """`text` cut to at most `limit` characters, ending in `marker` when something was cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return marker[: max(limit, 0)]
    return text[: limit - len(marker)] + marker


def mrkdwn_escape(text: str) -> str:
    """The three characters Slack's mrkdwn gives meaning to (`<@U1>`, `<!here>`, links)."""
    return text.translate(_ENTITIES)


# what may stay as written when a message leaves: a user mention (the only `<…>` the bot writes
# itself) and an entity already escaped
_DEFUSE = re.compile(r"<@[A-Za-z0-9]+>|&(?:amp|lt|gt);|[<>&]")


def defuse(text: str) -> str:
    """`text` with `<`, `>` and `&` escaped everywhere but in user mentions and entities: applied
    to every mrkdwn field that leaves (bot.slack.client), so a template that forgot `mrkdwn` still
    cannot post `<!channel>` or a disguised link."""
    return _DEFUSE.sub(lambda m: m[0] if len(m[0]) > 1 else m[0].translate(_ENTITIES), text)


def mrkdwn(text: str, limit: int | None = None) -> str:
    """Escaped `text`, then cut to `limit` characters without splitting an `&amp;` entity."""
    escaped = mrkdwn_escape(str(text))
    if limit is None or len(escaped) <= limit:
        return escaped
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[: max(limit, 0)]
    cut = escaped[: limit - len(ELLIPSIS)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


def _code_text(text: str, limit: int | None = None) -> str:
    return mrkdwn(_BACKTICK_RUN.sub("`\u200b", text), limit)


def _fenced(rows: Sequence[str]) -> str:
    return f"{FENCE}\n" + "\n".join(rows) + f"\n{FENCE}"


def mrkdwn_code(text: str, limit: int) -> str:
    """`text` as inline code, or as a code block when it spans lines or has backticks."""
    if not text.strip():
        return "_(none)_"
    if "\n" not in text and "`" not in text:
        return f"`{mrkdwn(text, max(limit - 2, 1))}`"
    body = _code_text(text.strip("\n"), max(limit - len(_fenced([""])), 1))
    return _fenced([body])


def _lines(text: str) -> list[str]:
    return text.splitlines() or ["(empty)"]


def _more(hidden: int) -> list[str]:
    return [f"{ELLIPSIS} {hidden} more line{'' if hidden == 1 else 's'}"] if hidden else []


def evidence_block(
    evidence: Sequence[Mapping[str, str]], limit: int, max_lines: int = 6, width: int = 200
) -> str:
    """Quoted evidence as a code block of at most `limit` characters.

    Each line of output is shown under its source, cut to `width`; at most `max_lines` lines, and
    fewer when the budget runs out; what is left out is counted ("… 3 more lines"). Empty when
    there is no evidence or not even the count fits.
    """
    quoted = [(src_i, line) for src_i, e in enumerate(evidence) for line in _lines(e["text"])]
    rows: list[str] = []
    last_source = -1
    shown = 0
    for src_i, line in quoted[:max_lines]:
        candidate = list(rows)
        if src_i != last_source:
            candidate.append(_code_text(evidence[src_i]["source"], width))
        candidate.append("  " + _code_text(line, width))
        if len(_fenced(candidate + _more(len(quoted) - shown - 1))) > limit:
            break
        rows, last_source, shown = candidate, src_i, shown + 1
    if not quoted:
        return ""
    block = _fenced(rows + _more(len(quoted) - shown))
    return block if len(block) <= limit else ""


def plan_fix_value(
    runbook: str | None, params: Mapping[str, str], cluster: str | None = None
) -> str | None:
    """The "Plan fix" button value, compact JSON; None when there is no runbook or it won't fit.
    `cluster` is set when the bot serves several: the click plans on the diagnosed one."""
    if runbook is None:
        return None
    value = json.dumps(
        {"runbook": runbook, "params": dict(params)} | ({"cluster": cluster} if cluster else {}),
        separators=(",", ":"),
        ensure_ascii=False,
        sort_keys=True,
    )
    return value if len(value) <= LIMITS.button_value else None


def groups_that_fit(groups: Sequence[Sequence[Any]], room: int) -> int:
    """How many leading groups of blocks fit in `room` blocks, whole.

    When not all fit, one block is kept free for a notice saying how many were left out.
    """
    if sum(len(g) for g in groups) <= room:
        return len(groups)
    used = kept = 0
    for group in groups:
        if used + len(group) > room - 1:
            break
        used += len(group)
        kept += 1
    return kept


def _check_text(
    problems: list[str], where: str, obj: Any, limit: int, plain_only: bool = False
) -> None:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("text"), str):
        problems.append(f"{where}: missing text object")
        return
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        problems.append(f"{where}.type: {obj.get('type')!r} is not one of {kinds}")
    text: str = obj["text"]
    if not text:
        problems.append(f"{where}.text: empty")
    elif len(text) > limit:
        problems.append(f"{where}.text: {len(text)} chars > {limit}")


def _check_element(problems: list[str], where: str, element: Any, action_ids: set[str]) -> None:
    if not isinstance(element, Mapping) or element.get("type") != "button":
        kind = element.get("type") if isinstance(element, Mapping) else element
        problems.append(f"{where}: unchecked element type {kind!r}")
        return
    _check_text(problems, f"{where}.text", element.get("text"), LIMITS.button_text, True)
    for key, limit in (
        ("action_id", LIMITS.action_id),
        ("value", LIMITS.button_value),
        ("url", LIMITS.button_url),
    ):
        value = element.get(key)
        if value is not None and len(str(value)) > limit:
            problems.append(f"{where}.{key}: {len(str(value))} chars > {limit}")
    action_id = element.get("action_id")
    if action_id is not None:
        if action_id in action_ids:
            problems.append(f"{where}.action_id: {action_id!r} is used twice")
        action_ids.add(action_id)


def _check_block(
    problems: list[str], where: str, block: Any, block_ids: set[str], action_ids: set[str]
) -> None:
    if not isinstance(block, Mapping):
        problems.append(f"{where}: not an object")
        return
    block_id = block.get("block_id")
    if block_id is not None:
        if len(str(block_id)) > LIMITS.block_id:
            problems.append(f"{where}.block_id: {len(str(block_id))} chars > {LIMITS.block_id}")
        if block_id in block_ids:
            problems.append(f"{where}.block_id: {block_id!r} is used twice")
        block_ids.add(block_id)
    kind = block.get("type")
    if kind == "header":
        _check_text(problems, f"{where}.text", block.get("text"), LIMITS.header_text, True)
    elif kind == "section":
        fields = block.get("fields") or []
        if "text" in block or not fields:
            _check_text(problems, f"{where}.text", block.get("text"), LIMITS.section_text)
        if len(fields) > LIMITS.section_fields:
            problems.append(f"{where}.fields: {len(fields)} > {LIMITS.section_fields}")
        for j, f in enumerate(fields):
            _check_text(problems, f"{where}.fields[{j}]", f, LIMITS.field_text)
        if "accessory" in block:
            _check_element(problems, f"{where}.accessory", block["accessory"], action_ids)
    elif kind == "context":
        elements = block.get("elements") or []
        if not elements or len(elements) > LIMITS.context_elements:
            problems.append(
                f"{where}.elements: {len(elements)} not in 1..{LIMITS.context_elements}"
            )
        for j, e in enumerate(elements):
            _check_text(problems, f"{where}.elements[{j}]", e, LIMITS.context_text)
    elif kind == "actions":
        elements = block.get("elements") or []
        if not elements or len(elements) > LIMITS.actions_elements:
            problems.append(
                f"{where}.elements: {len(elements)} not in 1..{LIMITS.actions_elements}"
            )
        for j, e in enumerate(elements):
            _check_element(problems, f"{where}.elements[{j}]", e, action_ids)
    elif kind != "divider":
        problems.append(f"{where}: unchecked block type {kind!r}")


def check_limits(payload: Mapping[str, Any]) -> list[str]:
    """Every way `payload` (a chat.postMessage body) breaks a Block Kit limit; empty when it fits.

    Block types and elements this module does not know are reported too, so a template can't grow
    past what is checked.
    """
    problems: list[str] = []
    text = payload.get("text")
    if not isinstance(text, str) or not text:
        problems.append("text: the fallback text (notifications, screen readers) is missing")
    elif len(text) > LIMITS.fallback_text:
        problems.append(f"text: {len(text)} chars > {LIMITS.fallback_text}")
    blocks = payload.get("blocks")
    if not isinstance(blocks, list):
        return [*problems, "blocks: missing or not a list"]
    if len(blocks) > LIMITS.blocks:
        problems.append(f"blocks: {len(blocks)} > {LIMITS.blocks}")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        _check_block(problems, f"blocks[{i}]", block, block_ids, action_ids)
    return problems


@dataclass(frozen=True)
class Chunks:
    chunks: list[str]
    hidden: int  # lines left out


def chunks(text: str, size: int, most: int) -> Chunks:
    """`text` cut at line ends into at most `most` pieces of at most `size` characters (after
    escaping, which can only grow a line); longer lines are clipped."""
    out: list[str] = []
    current: list[str] = []
    lines = text.splitlines()
    budget = size - len(_fenced([""]))
    used = 0
    for i, raw in enumerate(lines):
        line = truncate(raw, budget // 2)
        cost = len(_code_text(line)) + 1
        if current and used + cost > budget:
            out.append("\n".join(current))
            current, used = [], 0
            if len(out) == most:
                return Chunks(out, len(lines) - i)
        current.append(line)
        used += cost
    if current:
        if len(out) == most:
            return Chunks(out, len(current))
        out.append("\n".join(current))
    return Chunks(out, 0)


def register(env: jinja2.Environment) -> None:
    """Make the filters and globals the Slack templates use available in `env` (idempotent)."""
    env.filters["mrkdwn"] = mrkdwn
    env.filters["clip"] = truncate
    env.globals["slack_limits"] = LIMITS
    env.globals["mrkdwn_code"] = mrkdwn_code
    env.globals["evidence_block"] = evidence_block
    env.globals["plan_fix_value"] = plan_fix_value
    env.globals["groups_that_fit"] = groups_that_fit
    env.globals["chunks"] = chunks


def render_diagnose_slack(
    renderer_env: jinja2.Environment,
    data: Mapping[str, Any],
    lead: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The chat.postMessage body (`text` and `blocks`) for a diagnose reply's data, `lead`
    blocks first (within Block Kit's count of blocks: findings make room for them)."""
    template = renderer_env.get_template("slack/diagnose.json.j2")
    rendered = template.render(**data, lead=[dict(block) for block in lead])
    payload = json.loads(rendered)
    if not isinstance(payload, dict):
        raise TypeError(f"slack/diagnose.json.j2 rendered {type(payload).__name__}, not an object")
    return payload
