"""Label and field selectors for the readers that answer from a recording (a snapshot, a support
bundle) instead of an API server: the equality subset flannel-bot itself sends.

`a=b`, `a==b`, `c!=d`, and for labels `key` and `!key`. Set-based terms (`in`, `notin`) are refused
with an error naming the selector rather than silently matching everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flannel_bot.errors import ExecutorError

Term = tuple[str, str, str]  # key, op ("=", "!=", "exists", "!exists"), value


def terms(selector: str | None, *, labels: bool, where: str = "") -> list[Term]:
    out: list[Term] = []
    for raw in (selector or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if "(" in term or " in " in f" {term} " or " notin " in f" {term} ":
            raise ExecutorError(
                f"{where}selector {selector!r}: only equality selectors (a=b, c!=d) are supported"
            )
        if "!=" in term:
            key, value = term.split("!=", 1)
            out.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.split("=", 1)
            out.append((key.strip(), "=", value.lstrip("=").strip()))
        elif not labels:
            raise ExecutorError(f"{where}field selector {selector!r}: `{term}` has no value")
        elif term.startswith("!"):
            out.append((term[1:].strip(), "!exists", ""))
        else:
            out.append((term, "exists", ""))
    return out


def labels_match(selector: str | None, labels: Mapping[str, str], where: str = "") -> bool:
    for key, op, value in terms(selector, labels=True, where=where):
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
    return True


def fields_match(selector: str | None, field: Callable[[str], str], where: str = "") -> bool:
    """`field(dotted)` is the object's value for a dotted path, as the API compares it."""
    return all(
        (field(key) == value) == (op == "=")
        for key, op, value in terms(selector, labels=False, where=where)
    )
