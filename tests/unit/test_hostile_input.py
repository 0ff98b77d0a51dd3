"""Hostile input through every parameter of every runbook and through the command grammar: each
value is refused with a clear error or is one a strict pattern allows (so what reaches a node's
argv is a plain token, and the SSH layer quotes it anyway); nothing crashes."""

from __future__ import annotations

import dataclasses
import enum
import re
import shlex
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flannel_bot.errors import UserError
from flannel_bot.lab.topology import LabSpec
from flannel_bot.runs.params import parse_params
from flannel_bot.runs.registry import Registry
from flannel_bot.runs.runbook import DNS1123_SUBDOMAIN, INTERFACE_NAME, InterfaceName, NodeName
from flannel_bot.service import commands as c
from flannel_bot.service.handler import Service
from tests.conftest import who

REGISTRY = Registry.from_package("runbooks")
ETH0 = InterfaceName("eth0")
# every character str.splitlines() breaks a line at: a pattern anchored with `$` lets the first
# one through at the end of a value, so each must be refused after, before or inside a valid token
LINE_ENDS = ("\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
TOKENS = ["w2", "eth0", "md", "1", "true", "kube-flannel", "w1,w2", "24h", "2026-01-01"]
# digits of other scripts: `\d` matches them, int() reads them, a shell or a date parser does not
OTHER_DIGITS = ("\u0662", "\u06f2", "\u0968", "\uff12", "\U0001d7d0")


def around(token: str, sep: str) -> list[str]:
    """`sep` after, before and inside `token` (after each of its characters)."""
    inside = [token[:i] + sep + token[i:] for i in range(1, len(token))]
    return [token + sep, sep + token, *inside]


NASTY = st.one_of(
    st.builds(
        lambda token, sep, at: token[:at] + sep + token[at:],
        st.sampled_from(TOKENS),
        st.sampled_from(LINE_ENDS),
        st.integers(min_value=0, max_value=10),
    ),
    st.builds(
        lambda token, digit: token.replace("2", digit, 1),
        st.sampled_from(TOKENS),
        st.sampled_from(OTHER_DIGITS),
    ),
    st.text(
        alphabet=st.sampled_from(
            [
                *";|&$`\\\"'<>(){}[]*?!~#%\n\r\t =,./-_",
                *"\u2024\u2044\uff1b\u037e\u200b\u00e9\uff57\uff37\x00",  # look-alikes
                *"abcw123",
            ]
        ),
        max_size=40,
    ),
    st.sampled_from(
        [
            "../../etc/passwd",
            "w2;reboot",
            "$(reboot)",
            "`id`",
            "w2\nreboot",
            "w2 && rm -rf /",
            "w2|sh",
            "a" * 5000,
            "\uff572",  # fullwidth look-alike of w2
            "w\u200b2",
            "-rf",
            "--help",
            "eth0;id",
            "eth0/../x",
        ]
    ),
)
FIELDS = [
    (rb, f.name)
    for rb in REGISTRY.newest()
    for f in dataclasses.fields(rb.params)  # type: ignore[arg-type]
]


def allowed(kind: typing.Any, value: typing.Any) -> bool:
    """Whether a parsed value is one the strict pattern of its type allows."""
    if isinstance(value, enum.Enum | bool | int):
        return True
    if isinstance(value, tuple):
        return all(DNS1123_SUBDOMAIN.fullmatch(v) for v in value)
    return bool(DNS1123_SUBDOMAIN.fullmatch(value) or INTERFACE_NAME.fullmatch(value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(min_value=0, max_value=len(FIELDS) - 1), value=NASTY)
def test_every_runbook_parameter_refuses_or_accepts_only_plain_tokens(
    index: int, value: str
) -> None:
    rb, name = FIELDS[index]
    try:
        params = parse_params(rb.params, {name: value}, rb.ref)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 400
        return
    got = getattr(params, name)
    assert allowed(type(got), got), (rb.ref, name, value, got)
    for token in got if isinstance(got, tuple) else (got,):
        text = getattr(token, "value", token)
        assert shlex.quote(str(text)) == str(text)  # nothing a shell would read specially


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(NASTY, st.text(max_size=200)))
def test_the_grammar_parses_or_refuses_anything(text: str) -> None:
    try:
        c.parse(c.split_words(text))
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 400, str(exc)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=NASTY)
def test_the_service_answers_hostile_commands_with_a_reply(service: Service, value: str) -> None:
    for template in ("run node.fix-br-netfilter node={}", "diagnose {}", "audit report node={}"):
        reply = service.handle(template.format(shlex.quote(value)), who("alice"))
        assert reply.kind in ("error", "run", "diagnose", "audit_report")
        if reply.kind == "error":
            assert reply.data["message"] and not re.search(r"Traceback", reply.data["message"])


def valid_token(kind: typing.Any) -> str:
    """A value the parameter type accepts, to surround with hostile characters."""
    if kind is bool:
        return "true"
    if kind is int:
        return "12"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return str(next(iter(kind)).value)
    if kind is InterfaceName:
        return "eth0"
    return "w2"


@pytest.mark.parametrize("sep", LINE_ENDS)
def test_a_line_separator_around_or_inside_a_valid_token_is_refused_by_every_parameter(
    sep: str,
) -> None:
    for rb, name in FIELDS:
        hints = typing.get_type_hints(rb.params)
        required = {
            f.name: valid_token(hints[f.name])
            for f in dataclasses.fields(rb.params)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        for value in around(valid_token(hints[name]), sep):
            with pytest.raises(UserError) as exc:
                parse_params(rb.params, {**required, name: value}, rb.ref)
            # refused for this value, not for something else, and said on one line
            assert f"`{name}=" in str(exc.value) and "\n" not in str(exc.value), (rb.ref, value)


@dataclasses.dataclass(frozen=True)
class Counted:
    """Every parameter type the runbook API offers, whether or not a runbook uses it yet."""

    node: NodeName
    count: int = 1
    flag: bool = False
    iface: InterfaceName = ETH0


@pytest.mark.parametrize("sep", [*LINE_ENDS, " ", "\t", "+", ";"])
def test_every_parameter_type_refuses_a_separator_around_or_inside_a_token(sep: str) -> None:
    for name in ("node", "count", "flag", "iface"):
        token = valid_token(typing.get_type_hints(Counted)[name])
        for value in around(token, sep):
            raw = {"node": "w2", name: value}
            with pytest.raises(UserError):
                parse_params(Counted, raw, "t@1.0.0")


@pytest.mark.parametrize("digit", OTHER_DIGITS)
def test_a_whole_number_is_ascii_digits(digit: str) -> None:
    assert parse_params(Counted, {"node": "w2", "count": "-12"}, "t@1.0.0").count == -12
    for value in ("1" + digit, "1_000", "+1", "0x10"):
        with pytest.raises(UserError):
            parse_params(Counted, {"node": "w2", "count": value}, "t@1.0.0")


# every value the grammar itself checks, as (words with `{}` where the value goes, a valid value)
GRAMMAR_SLOTS = [
    ("{}", "help"),
    ("help {}", "run"),
    ("diagnose {}", "w2"),
    ("diagnose w1 --cluster {}", "prod-eu"),
    ("diagnose w1 --cluster={}", "prod-eu"),
    ("plan {}", "flannel.restart-pods@1.2.0"),
    ("run node.check {}=w2", "node"),
    ("status {}", "12"),
    ("cancel {}", "12"),
    ("deny {} because", "12"),
    ("approve {}", "12"),
    ("approve 12 plan={}", "sha256:0123abcd"),
    ("audit run {}", "12"),
    ("audit {}", "verify"),
    *(
        (f"audit report {key}={{}}", value)
        for key, value in {
            "since": "24h",
            "from": "2026-11-21T09:00",
            "to": "2026-11-21",
            "run": "12",
            "cluster": "prod-eu",
            "node": "w2",
            "runbook": "node.check",
            "user": "alice",
            "channel": "C0123",
            "thread": "1700000000.000100",
            "format": "html",
        }.items()
    ),
    ("audit report --since {}", "24h"),
]


@pytest.mark.parametrize(("words", "token"), GRAMMAR_SLOTS)
def test_the_grammar_refuses_a_line_separator_or_foreign_digit_in_every_value(
    words: str, token: str
) -> None:
    def parse(value: str) -> c.Command:
        return c.parse([w.replace("{}", value) for w in words.split()])

    parse(token)  # the valid value is accepted
    hostile = [v for sep in LINE_ENDS for v in around(token, sep)]
    hostile += [token.replace(d, o, 1) for d in "0123456789" if d in token for o in OTHER_DIGITS]
    for value in hostile:
        with pytest.raises(UserError) as exc:
            parse(value)
        assert "\n" not in str(exc.value) and len(str(exc.value)) < 400, (words, value)


SERVICE_COMMANDS = [
    ("run node.fix-br-netfilter node={}", "w2"),
    ("plan flannel.repair iface={}", "eth0"),
    ("plan flannel.restart-pods nodes={}", "w1,w2"),
    ("plan flannel.restart-pods all={}", "true"),
    ("diagnose {}", "w2"),
    ("status {}", "1"),
    ("approve {}", "1"),
    ("audit report format={}", "md"),
    ("audit report since={}", "24h"),
    ("audit report from={}", "2026-11-21"),
    ("audit report to={}", "2026-11-21T09:00"),
    ("audit report node={}", "w2"),
]


@pytest.mark.parametrize(("template", "token"), SERVICE_COMMANDS)
def test_the_service_refuses_separators_and_foreign_digits_with_a_one_line_error(
    service: Service, template: str, token: str
) -> None:
    hostile = [v for sep in LINE_ENDS for v in around(token, sep)]
    hostile += [token.replace(d, o, 1) for d in "0123456789" if d in token for o in OTHER_DIGITS]
    for value in hostile:
        reply = service.handle(template.format(shlex.quote(value)), who("alice"))
        assert reply.kind == "error", (template, value, reply.kind)
        assert "\n" not in reply.data["message"], (template, value)


@pytest.mark.parametrize("sep", LINE_ENDS)
def test_a_lab_name_with_a_line_separator_is_refused(sep: str) -> None:
    """The lab's name goes into namespace, link and path names as root."""
    for name in around("lab", sep):
        with pytest.raises(ValueError, match="must be 1-4 lowercase letters"):
            LabSpec(name=name, nodes=1)
