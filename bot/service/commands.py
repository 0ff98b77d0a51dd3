"""The `/flannel` grammar: one parser shared by Slack, the shell adapter and the CLI.

Parsing turns words into a frozen request; it validates shapes (run ids are numbers, node names are
DNS-1123, parameters are key=value) and leaves meaning (does the node exist?) to the engine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flannel_bot.errors import CommandSyntaxError, shown
from flannel_bot.runs.runbook import DNS1123_SUBDOMAIN
from flannel_bot.service.report import parse_moment, parse_span

USAGE: Mapping[str, str] = {
    "help": "help [command]",
    "diagnose": "diagnose [node...] [--deep] [--cluster NAME]",
    "runbooks": "runbooks",
    "plan": "plan <runbook>[@version] key=value... [--cluster NAME]",
    "run": "run <runbook>[@version] key=value... [--cluster NAME]",
    "approve": "approve <run> [plan=<hash>]",
    "deny": "deny <run> [reason...]",
    "cancel": "cancel <run>",
    "status": "status [run] [--cluster NAME]",
    "audit": "audit [verify | run <run> | recent | report [--since 24h] [--from T] [--to T] "
    "[run=N] [cluster=NAME] [node=w2] [runbook=id] [user=alice] [channel=C..] [thread=ts] "
    "[format=html]]",
}
SUMMARY: Mapping[str, str] = {
    "help": "show this help, or the usage of one command",
    "diagnose": "gather evidence from the API and the nodes and name what is broken",
    "runbooks": "list runbooks with their versions and risk",
    "plan": "show every step a runbook would take, without changing anything",
    "run": "start a runbook; a plan with destructive steps waits for approval before any change",
    "approve": "approve a run that waits for approval (not your own)",
    "deny": "deny a run that waits for approval; the run ends",
    "cancel": "withdraw a run before it finishes",
    "status": "show one run, or the recent runs",
    "audit": "verify the audit chain, show a run's trail, or write the incident report",
}
_KEY = re.compile(r"\A[a-z][a-z0-9_-]{0,62}\Z")
_REF = re.compile(r"\A[a-z][a-z0-9.-]*(@[0-9][0-9A-Za-z.+-]*)?\Z")
_RUN = re.compile(r"\A#?([1-9][0-9]{0,17})\Z")
CLUSTER = re.compile(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class Help:
    topic: str | None = None


@dataclass(frozen=True)
class Diagnose:
    nodes: tuple[str, ...] = ()
    deep: bool = False
    cluster: str | None = None


@dataclass(frozen=True)
class ListRunbooks:
    pass


@dataclass(frozen=True)
class PlanRunbook:
    ref: str
    params: Mapping[str, str] = field(default_factory=dict)
    cluster: str | None = None


@dataclass(frozen=True)
class RunRunbook:
    ref: str
    params: Mapping[str, str] = field(default_factory=dict)
    cluster: str | None = None


@dataclass(frozen=True)
class Approve:
    run_id: int
    plan_hash: str | None = None


@dataclass(frozen=True)
class Deny:
    run_id: int
    reason: str = ""


@dataclass(frozen=True)
class Cancel:
    run_id: int


@dataclass(frozen=True)
class Status:
    run_id: int | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class Audit:
    action: str = "recent"
    run_id: int | None = None


REPORT_FORMATS = ("md", "html", "csv", "jsonl")
# ASCII digits only (`\d` also matches other scripts' digits, which the date parser refuses) and
# \Z, not $, which would let a trailing newline through wherever .match() or .search() is used
_TIME = r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(\.[0-9]+)?Z?)?\Z"
_REPORT_VALUES = {
    "since": re.compile(r"\A[0-9]{1,6}[smhdw]\Z"),
    "from": re.compile(_TIME),
    "to": re.compile(_TIME),
    "run": _RUN,
    "cluster": CLUSTER,
    "node": DNS1123_SUBDOMAIN,
    "runbook": re.compile(r"\A[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+\Z"),
    "user": re.compile(r"\A[A-Za-z0-9._:@-]{1,64}\Z"),
    "channel": re.compile(r"\A[A-Z0-9]{2,24}\Z"),
    "thread": re.compile(r"\A[0-9]{1,12}\.[0-9]{1,9}\Z"),
    "format": re.compile(rf"\A({'|'.join(REPORT_FORMATS)})\Z"),
}


@dataclass(frozen=True)
class AuditReport:
    """`audit report`: the selection as validated key=value pairs, and the output format."""

    selection: Mapping[str, str] = field(default_factory=dict)
    format: str = "md"


Command = (
    Help
    | Diagnose
    | ListRunbooks
    | PlanRunbook
    | RunRunbook
    | Approve
    | Deny
    | Cancel
    | Status
    | Audit
    | AuditReport
)


def usage(verb: str) -> str:
    return f"usage: /flannel {USAGE[verb]}"


def _fail(message: str, verb: str) -> CommandSyntaxError:
    return CommandSyntaxError(message, usage(verb))


def split_words(text: str) -> list[str]:
    """Split chat text like a shell would, without ever handing it to one."""
    text = text.strip()
    if text.startswith("/flannel"):
        text = text.removeprefix("/flannel")
    try:
        return shlex.split(text)
    except ValueError:
        raise CommandSyntaxError("the command has an unclosed quote", usage("help")) from None


def parse_text(text: str) -> Command:
    return parse(split_words(text))


def _run_id(word: str | None, verb: str) -> int:
    if word is None:
        raise _fail(f"`{verb}` needs a run number", verb)
    match = _RUN.fullmatch(word)
    if match is None:
        raise _fail(f"`{shown(word)}` is not a run number", verb)
    return int(match.group(1))


def _params(words: Sequence[str], verb: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise _fail(f"`{shown(word)}` is not a key=value parameter", verb)
        if key in params:
            raise _fail(f"parameter `{shown(key)}` is given twice", verb)
        params[key] = value
    return params


_TAKES_CLUSTER = ("diagnose", "plan", "run", "status")


def _take_cluster(args: list[str], verb: str) -> str | None:
    """Remove `--cluster NAME` (or `--cluster=NAME`) from `args` and check the name."""
    at = [i for i, w in enumerate(args) if w == "--cluster" or w.startswith("--cluster=")]
    if not at:
        return None
    if verb not in _TAKES_CLUSTER:
        why = ": the run number already names its cluster" if verb in ("approve", "deny") else ""
        raise _fail(f"`{verb}` takes no --cluster{why}", verb)
    if len(at) > 1:
        raise _fail("--cluster is given twice", verb)
    word = args.pop(at[0])
    if "=" in word:
        value = word.partition("=")[2]
    elif at[0] < len(args):
        value = args.pop(at[0])
    else:
        raise _fail("--cluster needs a cluster name", verb)
    if not CLUSTER.fullmatch(value):
        raise _fail(
            f"`{shown(value)}` is not a cluster name (lowercase letters, digits and dashes)", verb
        )
    return value


def parse(words: Sequence[str]) -> Command:
    """Parse the words after `/flannel`. Raises CommandSyntaxError with the usage line."""
    if not words:
        return Help()
    verb, args = words[0].lower(), list(words[1:])
    if verb not in USAGE:
        known = ", ".join(USAGE)
        raise CommandSyntaxError(
            f"unknown command `{shown(words[0])}`; commands: {known}", usage("help")
        )
    if verb == "audit":
        return _audit(args, verb)
    cluster = _take_cluster(args, verb)
    if verb == "help":
        if len(args) > 1 or (args and args[0] not in USAGE):
            raise _fail(f"there is no help for `{shown(' '.join(args))}`", verb)
        return Help(args[0] if args else None)
    if verb == "diagnose":
        deep = "--deep" in args
        names = [a for a in args if a != "--deep"]
        for name in names:
            if len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name):
                raise _fail(f"`{shown(name)}` is not a valid node name (DNS-1123)", verb)
        return Diagnose(tuple(dict.fromkeys(names)), deep, cluster)
    if verb == "runbooks":
        if args:
            raise _fail("`runbooks` takes no arguments", verb)
        return ListRunbooks()
    if verb in ("plan", "run"):
        if not args:
            raise _fail(f"`{verb}` needs a runbook name; `runbooks` lists them", verb)
        if not _REF.fullmatch(args[0]):
            raise _fail(
                f"`{shown(args[0])}` is not a runbook name like flannel.restart-pods@1.0.0", verb
            )
        params = _params(args[1:], verb)
        cls = PlanRunbook if verb == "plan" else RunRunbook
        return cls(args[0], params, cluster)
    if verb == "approve":
        run_id = _run_id(args[0] if args else None, verb)
        extra = _params(args[1:], verb)
        if set(extra) - {"plan"}:
            raise _fail("`approve` takes only plan=<hash>", verb)
        plan_hash = extra.get("plan")
        if plan_hash is not None and not re.fullmatch(r"(sha256:)?[0-9a-f]{8,64}", plan_hash):
            raise _fail(f"`{shown(plan_hash)}` is not a plan hash", verb)
        return Approve(run_id, plan_hash)
    if verb == "deny":
        return Deny(_run_id(args[0] if args else None, verb), " ".join(args[1:])[:500])
    if verb == "cancel":
        if len(args) > 1:
            raise _fail("`cancel` takes one run number", verb)
        return Cancel(_run_id(args[0] if args else None, verb))
    if verb == "status":
        if len(args) > 1:
            raise _fail("`status` takes at most one run number", verb)
        return Status(_run_id(args[0], verb) if args else None, cluster)
    raise AssertionError(f"unparsed verb {verb}")  # pragma: no cover


def _audit(args: list[str], verb: str) -> Audit | AuditReport:
    if not args or args == ["recent"]:
        return Audit("recent")
    if args == ["verify"]:
        return Audit("verify")
    if args[0] == "run" and len(args) == 2:
        return Audit("run", _run_id(args[1], verb))
    if args[0] == "report":
        return _audit_report(args[1:], verb)
    raise _fail(f"unknown audit request `{shown(' '.join(args))}`", verb)


def _audit_report(args: Sequence[str], verb: str) -> AuditReport:
    """`--since 24h`, `--since=24h` and `since=24h` are the same; every value is checked."""
    words: list[str] = []
    it = iter(args)
    for word in it:
        if word.startswith("--"):
            key, sep, value = word[2:].partition("=")
            words.append(f"{key}={value if sep else next(it, '')}")
        else:
            words.append(word)
    params = _params(words, verb)
    for key, value in params.items():
        pattern = _REPORT_VALUES.get(key)
        if pattern is None:
            raise _fail(
                f"`audit report` has no `{key}`; it takes {', '.join(_REPORT_VALUES)}", verb
            )
        if not pattern.fullmatch(value):
            raise _fail(f"`{key}={shown(value)}` is not a valid {key}", verb)
    if "since" in params and "from" in params:
        raise _fail("give --since or --from, not both", verb)
    _check_times(params, verb)
    fmt = params.pop("format", "md")
    return AuditReport(params, fmt)


def _check_times(params: Mapping[str, str], verb: str) -> None:
    """Dates that match the pattern but do not exist (2026-13-45), and spans too long to
    subtract from now, refused here with the reason rather than failing later."""
    if "since" in params:
        try:
            parse_span(params["since"])
        except ValueError as exc:
            raise _fail(str(exc), verb) from None
    moments = {}
    for key in ("from", "to"):
        if key in params:
            try:
                moments[key] = parse_moment(params[key])
            except ValueError as exc:
                raise _fail(f"`{key}={shown(params[key])}` is not a date: {exc}", verb) from None
    if len(moments) == 2 and moments["to"] < moments["from"]:
        raise _fail(f"--to ({params['to']}) is before --from ({params['from']})", verb)
