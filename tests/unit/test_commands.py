from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flannel_bot.errors import CommandSyntaxError
from flannel_bot.service import commands as c


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", c.Help()),
        ("/flannel help run", c.Help("run")),
        ("diagnose", c.Diagnose()),
        ("diagnose w2 w3 w2", c.Diagnose(("w2", "w3"))),
        ("runbooks", c.ListRunbooks()),
        (
            "plan flannel.restart-pods nodes=w2",
            c.PlanRunbook("flannel.restart-pods", {"nodes": "w2"}),
        ),
        (
            "run flannel.restart-pods@1.0.0 node=w2 namespace=kube-system",
            c.RunRunbook("flannel.restart-pods@1.0.0", {"node": "w2", "namespace": "kube-system"}),
        ),
        ("approve 12", c.Approve(12)),
        ("approve #12 plan=93e9f4743821", c.Approve(12, "93e9f4743821")),
        ("deny 12 not during the release", c.Deny(12, "not during the release")),
        ("cancel 3", c.Cancel(3)),
        ("status", c.Status()),
        ("status 7", c.Status(7)),
        ("audit", c.Audit("recent")),
        ("audit verify", c.Audit("verify")),
        ("audit run 4", c.Audit("run", 4)),
        (
            "RUN flannel.restart-pods nodes=w2",
            c.RunRunbook("flannel.restart-pods", {"nodes": "w2"}),
        ),
        ("diagnose --cluster prod-eu w2", c.Diagnose(("w2",), cluster="prod-eu")),
        ("diagnose w2 --deep --cluster=prod-eu", c.Diagnose(("w2",), True, "prod-eu")),
        (
            "plan node.check node=w2 --cluster prod-us",
            c.PlanRunbook("node.check", {"node": "w2"}, "prod-us"),
        ),
        (
            "run --cluster prod-us node.check node=w2",
            c.RunRunbook("node.check", {"node": "w2"}, "prod-us"),
        ),
        ("status --cluster prod-us", c.Status(None, "prod-us")),
        ("audit report cluster=prod-us", c.AuditReport({"cluster": "prod-us"})),
    ],
)
def test_grammar(text: str, expected: c.Command) -> None:
    assert c.parse_text(text) == expected


@pytest.mark.parametrize(
    ("text", "message", "usage"),
    [
        ("reboot w2", "unknown command `reboot`", "usage: /flannel help [command]"),
        ("approve", "`approve` needs a run number", "usage: /flannel approve <run> [plan=<hash>]"),
        ("approve twelve", "`twelve` is not a run number", "usage: /flannel approve"),
        ("approve 0", "`0` is not a run number", "usage: /flannel approve"),
        ("run", "`run` needs a runbook name", "usage: /flannel run <runbook>"),
        ("run flannel.restart-pods w2", "`w2` is not a key=value parameter", "usage: /flannel run"),
        ("run flannel.restart-pods nodes=w1 nodes=w2", "given twice", "usage: /flannel run"),
        ("run 'flannel;rm' x=1", "is not a runbook name", "usage: /flannel run"),
        ("diagnose 'w2;reboot'", "is not a valid node name", "usage: /flannel diagnose"),
        ("diagnose $(id)", "is not a valid node name", "usage: /flannel diagnose"),
        ("status 1 2", "at most one run number", "usage: /flannel status"),
        ("plan x nodes='w2", "unclosed quote", "usage: /flannel help"),
        ("audit delete", "unknown audit request", "usage: /flannel audit"),
        ("diagnose --cluster", "--cluster needs a cluster name", "usage: /flannel diagnose"),
        ("diagnose --cluster a --cluster b", "--cluster is given twice", "usage: /flannel diag"),
        ("diagnose --cluster 'eu;id'", "`eu;id` is not a cluster name", "usage: /flannel diag"),
        ("diagnose --cluster=Prod", "`Prod` is not a cluster name", "usage: /flannel diagnose"),
        ("approve 3 --cluster eu", "run number already names its cluster", "usage: /flannel ap"),
        ("audit report cluster=../x", "is not a valid cluster", "usage: /flannel audit"),
    ],
)
def test_errors_are_one_sentence_with_usage(text: str, message: str, usage: str) -> None:
    with pytest.raises(CommandSyntaxError) as exc:
        c.parse_text(text)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert exc.value.usage.startswith(usage)


@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_a_syntax_error(text: str) -> None:
    try:
        c.parse_text(text)
    except CommandSyntaxError as exc:
        assert exc.usage.startswith("usage: /flannel")
