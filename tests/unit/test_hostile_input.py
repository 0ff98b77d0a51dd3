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

from bot.errors import UserError
from bot.runs.params import parse_params
from bot.runs.registry import Registry
from bot.runs.runbook import DNS1123_SUBDOMAIN, INTERFACE_NAME
from bot.service import commands as c
from bot.service.handler import Service
from tests.conftest import who

REGISTRY = Registry.from_package("runbooks")
# every character str.splitlines() breaks a line at: a pattern anchored with `$` lets the first
# one through at the end of a value, so each must be refused after a valid token
LINE_ENDS = ("\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
NASTY = st.one_of(
    st.builds(
        lambda token, end: token + end,
        st.sampled_from(["w2", "eth0", "md", "1", "true", "kube-flannel", "w1,w2"]),
        st.sampled_from(LINE_ENDS),
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


@pytest.mark.parametrize("end", LINE_ENDS)
def test_a_valid_token_with_a_line_end_is_refused_by_every_parameter(end: str) -> None:
    for rb, name in FIELDS:
        field = next(f for f in dataclasses.fields(rb.params) if f.name == name)  # type: ignore[arg-type]
        token = "true" if field.type in (bool, "bool") else "w2"
        with pytest.raises(UserError):
            parse_params(rb.params, {name: token + end}, rb.ref)
