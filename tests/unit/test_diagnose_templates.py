"""The diagnose reply in the terminal and in Slack: content, hostile text, and Slack's limits."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import pytest
from slack_sdk.models.blocks import Block

from flannel_bot.diagnosis.findings import SEVERITIES, EvidenceLine, Finding, Fix
from flannel_bot.diagnosis.rule import rank
from flannel_bot.diagnosis.rules import RULES
from flannel_bot.render import Renderer
from flannel_bot.service.handler import Reply
from flannel_bot.settings import REPO_ROOT
from flannel_bot.slack import blocks as sb
from flannel_bot.slack.messages import Messages

TEMPLATES = REPO_ROOT / "templates"
NODES = [
    {
        "name": "cp1",
        "ready": True,
        "pod_cidr": "10.244.0.0/24",
        "flannel": "Running",
        "probed": True,
    },
    {
        "name": "w1",
        "ready": True,
        "pod_cidr": "10.244.1.0/24",
        "flannel": "Running",
        "probed": True,
    },
    {
        "name": "w2",
        "ready": False,
        "pod_cidr": "10.244.2.0/24",
        "flannel": "CrashLoopBackOff (5 restarts)",
        "probed": True,
    },
]
BR_NETFILTER_SOURCE = "w2: cat /proc/sys/net/bridge/bridge-nf-call-iptables"
BR_NETFILTER_TEXT = "cat: /proc/sys/net/bridge/bridge-nf-call-iptables: No such file or directory"
FLANNEL_LOG = (
    "I0512 10:01:02.123456 1 main.go:212] CLI flags config: {etcdEndpoints:...}\n"
    "E0512 10:01:02.223456 1 main.go:330] Failed to check br_netfilter: stat "
    "/proc/sys/net/bridge/bridge-nf-call-iptables: no such file or directory"
)


@pytest.fixture
def renderer() -> Renderer:
    return Messages(TEMPLATES).renderer  # the shell and the Slack templates


def shell(renderer: Renderer, data: dict[str, Any]) -> str:
    return renderer.reply(Reply("diagnose", data))


def slack(renderer: Renderer, data: dict[str, Any]) -> dict[str, Any]:
    payload = sb.render_diagnose_slack(renderer.env, data)
    assert sb.check_limits(payload) == []
    for block in payload["blocks"]:  # slack_sdk's own validators, as a second opinion
        parsed = Block.parse(block)
        assert parsed is not None
        parsed.validate_json()
    return payload


def reply_data(
    findings: list[Finding], gaps: list[str] | None = None, source: str = "live"
) -> dict[str, Any]:
    return {
        "source": source,
        "nodes": NODES,
        "findings": [f.to_json() for f in findings],
        "gaps": gaps or [],
        "summary": {
            **{s: sum(f.severity == s for f in findings) for s in SEVERITIES},
            "nodes": len(NODES),
            "probed": sum(n["probed"] for n in NODES),
        },
    }


def br_netfilter() -> Finding:
    return Finding(
        "br-netfilter-missing",
        "critical",
        ("w2",),
        "br_netfilter is not loaded on w2, so bridged pod traffic bypasses iptables",
        "Without br_netfilter, traffic between pods on the cni0 bridge never reaches iptables, "
        "so Service NAT is skipped. flanneld checks for it at start and exits.",
        [
            EvidenceLine(BR_NETFILTER_SOURCE, BR_NETFILTER_TEXT),
            EvidenceLine("kube-flannel/kube-flannel-ds-x7k2p logs", FLANNEL_LOG),
        ],
        Fix(
            "modprobe br_netfilter; echo br_netfilter > /etc/modules-load.d/br_netfilter.conf",
            "node.fix-br-netfilter",
            {"node": "w2"},
        ),
    )


def crashloop() -> Finding:
    return Finding(
        "flannel-crashloop",
        "warning",
        ("w2",),
        "kube-flannel-ds-x7k2p on w2 is in CrashLoopBackOff (5 restarts)",
        "The kubelet restarts flanneld with growing back-off; until it stays up, no "
        "subnet.env is written and new pods on w2 cannot get an address.",
        [EvidenceLine("API: pod kube-flannel/kube-flannel-ds-x7k2p", "CrashLoopBackOff")],
        Fix(
            "kubectl -n kube-flannel delete pod kube-flannel-ds-x7k2p",
            "flannel.restart-pods",
            {"nodes": "w2", "namespace": "kube-flannel"},
        ),
    )


def mtu_mismatch() -> Finding:
    return Finding(
        "mtu-mismatch",
        "warning",
        ("w1", "w2"),
        "flannel.1 MTU 1450 is larger than eth0 MTU 1400 minus the VXLAN overhead",
        "VXLAN adds 50 bytes; packets near the MTU are dropped silently.",
        [EvidenceLine("w1: ip -d link show flannel.1", "4: flannel.1: <BROADCAST> mtu 1450")],
        Fix("set MTU in net-conf.json to 1350\nthen restart the flannel pods on every node"),
    )


def sections(payload: dict[str, Any]) -> dict[str, str]:
    return {
        b["block_id"]: b["text"]["text"]
        for b in payload["blocks"]
        if b["type"] == "section" and b.get("block_id", "").startswith("finding:")
    }


def buttons(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]


def mrkdwn_texts(payload: dict[str, Any]) -> Iterator[str]:
    yield payload["text"]
    for b in payload["blocks"]:
        if b["type"] == "section":
            yield b["text"]["text"]
        if b["type"] == "context":
            yield from (e["text"] for e in b["elements"])


# -- healthy ------------------------------------------------------------------------------------


def test_healthy_cluster(renderer: Renderer) -> None:
    out = shell(renderer, reply_data([]))
    lines = out.splitlines()
    assert lines[0] == (
        "flannel diagnose (live): 3 nodes, 3 probed | 0 critical, 0 warning, 0 info"
    )
    assert re.search(
        r"^w2 +NotReady +yes +10\.244\.2\.0/24 +CrashLoopBackOff \(5 restarts\)$", out, re.M
    )
    assert lines[-1] == "No findings: flannel looks healthy on 3 nodes."
    assert "Not checked" not in out

    payload = slack(renderer, reply_data([]))
    blocks = payload["blocks"]
    assert blocks[0]["text"]["text"] == "Flannel looks healthy on 3 nodes"
    assert [b["type"] for b in blocks] == ["header", "context", "section"]
    assert "No findings: flannel looks healthy on 3 nodes." in blocks[2]["text"]["text"]
    assert "*NotReady:* w2" in [e["text"] for e in blocks[1]["elements"]]
    assert payload["text"] == "Flannel diagnose (live): no findings on 3 nodes"


def test_gaps_are_listed_last(renderer: Renderer) -> None:
    data = reply_data([], gaps=["could not read events: forbidden", "w3: ssh timed out"])
    out = shell(renderer, data)
    assert out.endswith("Not checked:\n  - could not read events: forbidden\n  - w3: ssh timed out")
    last = slack(renderer, data)["blocks"][-1]
    assert last["type"] == "context"
    assert last["elements"][0]["text"] == (
        "*Not checked:*\n• could not read events: forbidden\n• w3: ssh timed out"
    )


# -- one root cause with a runbook, and its symptom ---------------------------------------------


def test_critical_finding_with_runbook(renderer: Renderer) -> None:
    findings = rank([crashloop(), br_netfilter()])
    data = reply_data(findings, source="bundle /tmp/support-2024-05-12.tar.gz")
    out = shell(renderer, data)
    assert out.splitlines()[0] == (
        "flannel diagnose (bundle /tmp/support-2024-05-12.tar.gz): 3 nodes, 3 probed"
        " | 1 critical, 1 warning, 0 info"
    )
    first, second = out.split("\n2. ")
    assert "1. [CRITICAL] br-netfilter-missing on w2\n" in first
    assert f"     {BR_NETFILTER_SOURCE}\n       > {BR_NETFILTER_TEXT}\n" in first
    assert "     kube-flannel/kube-flannel-ds-x7k2p logs\n       > I0512" in first
    assert "       > E0512 10:01:02.223456 1 main.go:330] Failed to check br_netfilter" in first
    assert "   why: Without br_netfilter, traffic between pods" in first
    assert "   fix: /flannel run node.fix-br-netfilter node=w2" in first
    assert "explained by" not in first
    assert second.startswith("[WARNING] flannel-crashloop on w2\n")
    assert "   explained by: br-netfilter-missing\n" in second
    assert "   fix: /flannel run flannel.restart-pods nodes=w2 namespace=kube-flannel" in second
    assert "\x1b" not in out

    payload = slack(renderer, data)
    assert payload["blocks"][0]["text"]["text"] == "Flannel diagnose: 1 critical, 1 warning, 0 info"
    assert "*Source:* bundle /tmp/support-2024-05-12.tar.gz" in json.dumps(payload["blocks"][1])
    assert payload["text"].endswith("first: br-netfilter-missing on w2")
    text = sections(payload)
    assert text["finding:0"].startswith(
        ":red_circle: *br-netfilter-missing* on w2\nbr_netfilter is not loaded on w2"
    )
    assert f"```\n{BR_NETFILTER_SOURCE}\n  {BR_NETFILTER_TEXT}\n" in text["finding:0"]
    assert "*Fix:* `/flannel run node.fix-br-netfilter node=w2`" in text["finding:0"]
    assert text["finding:1"].startswith(":large_orange_circle: *flannel-crashloop* on w2")
    assert "_explained by br-netfilter-missing_" in text["finding:1"]
    plan = buttons(payload)
    assert [b["action_id"] for b in plan] == ["plan_fix:0", "plan_fix:1"]
    assert [json.loads(b["value"]) for b in plan] == [
        {"runbook": "node.fix-br-netfilter", "params": {"node": "w2"}},
        {"runbook": "flannel.restart-pods", "params": {"nodes": "w2", "namespace": "kube-flannel"}},
    ]
    assert plan[0]["text"]["text"] == "Plan fix: node.fix-br-netfilter"
    types = [b["type"] for b in payload["blocks"]]
    assert types == ["header", "context"] + ["section", "actions", "divider"] * 2


def test_finding_without_runbook_shows_manual_steps(renderer: Renderer) -> None:
    data = reply_data([mtu_mismatch()])
    out = shell(renderer, data)
    assert "1. [WARNING] mtu-mismatch on w1, w2\n" in out
    assert (
        "   manual: set MTU in net-conf.json to 1350\n"
        "           then restart the flannel pods on every node"
    ) in out
    assert "/flannel" not in out
    assert "       > 4: flannel.1: <BROADCAST> mtu 1450" in out

    payload = slack(renderer, data)
    assert buttons(payload) == []
    text = sections(payload)["finding:0"]
    assert "*Manual:*\n```\nset MTU in net-conf.json to 1350\nthen restart" in text
    assert "4: flannel.1: &lt;BROADCAST&gt; mtu 1450" in text
    assert [b["type"] for b in payload["blocks"]] == ["header", "context", "section", "divider"]


def test_one_line_manual_is_inline_code_and_escaped(renderer: Renderer) -> None:
    finding = br_netfilter()
    finding.fix = Fix(finding.fix.manual)
    text = sections(slack(renderer, reply_data([finding])))["finding:0"]
    assert text.endswith(
        "*Manual:* `modprobe br_netfilter; echo br_netfilter &gt; "
        "/etc/modules-load.d/br_netfilter.conf`"
    )
    out = shell(renderer, reply_data([finding]))
    assert "   manual: modprobe br_netfilter; echo br_netfilter > /etc/modules-load.d/" in out


@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_severity_renders(renderer: Renderer, severity: str) -> None:
    finding = br_netfilter()
    finding.severity = severity
    assert f"1. [{severity.upper() if severity != 'info' else 'info'}]" in shell(
        renderer, reply_data([finding])
    )
    assert sections(slack(renderer, reply_data([finding])))["finding:0"].startswith(":")


# -- hostile text -------------------------------------------------------------------------------

LONG_LINE = "E0512 iptables-restore: " + ("x\\\"y' " * 1700)  # ~10 KB, quotes and backslashes


def hostile() -> Finding:
    return Finding(
        "subnet-overlap",
        "critical",
        ("w2",),
        'summary with "quotes" \\ backslash <@U123> & <!channel>\nSECOND LINE',
        "mechanism with `code` and <https://evil.example|click> & ünïcødé",
        [
            EvidenceLine('w2: journalctl -u kubelet | grep "failed"', LONG_LINE),
            EvidenceLine(
                "w2: ip addr",
                "ошибка ✗ 🔥 \x1b[31mRED\x1b[0m\nclose the block: ``` <@U123> & done\n"
                "a\\nb \"q\" 'single'\r\nlast",
            ),
        ],
        Fix('echo "a\\b" > /tmp/x', "flannel.restart-pods", {"nodes": 'w2"\\', "note": "ü<&>"}),
    )


def test_hostile_text_in_the_terminal(renderer: Renderer) -> None:
    out = shell(renderer, reply_data([hostile()]))
    assert "\x1b" not in out and "\r" not in out
    assert "ошибка ✗ 🔥 ^[[31mRED^[[0m" in out
    assert '   summary with "quotes" \\ backslash <@U123> & <!channel> ⏎ SECOND LINE\n' in out
    long_quoted = next(line for line in out.splitlines() if "iptables-restore" in line)
    assert long_quoted.endswith(f"… (+{len(LONG_LINE) - 200} chars)")
    assert len(long_quoted) < 240
    assert "       > close the block: ``` <@U123> & done" in out
    assert 'fix: /flannel run flannel.restart-pods nodes=w2"\\ note=ü<&>' in out


def test_hostile_text_in_slack(renderer: Renderer) -> None:
    data = reply_data([hostile()], gaps=['kubectl said "<@U999> & bye"\nnext'])
    rendered = renderer.env.get_template("slack/diagnose.json.j2").render(**data)
    payload = json.loads(rendered)
    assert payload == slack(renderer, data)
    for text in mrkdwn_texts(payload):
        assert "<" not in text and ">" not in text, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text
    section = sections(payload)["finding:0"]
    assert (
        '\nsummary with "quotes" \\ backslash &lt;@U123&gt; &amp; &lt;!channel&gt; SECOND LINE\n'
        in section
    )
    assert section.count("```") == 2  # the evidence's own ``` cannot close the block
    assert "close the block: `\u200b`\u200b` &lt;@U123&gt; &amp; done" in section
    assert "ошибка ✗ 🔥" in section
    long_quoted = next(line for line in section.splitlines() if "iptables-restore" in line)
    assert len(long_quoted) <= 202 and long_quoted.endswith("…")
    assert "\n  a\\nb \"q\" 'single'\n  last\n```\n" in section  # \r\n ends a line too
    assert "more lines" not in section
    value = json.loads(buttons(payload)[0]["value"])
    assert value == {
        "runbook": "flannel.restart-pods",
        "params": {"nodes": 'w2"\\', "note": "ü<&>"},
    }
    assert "&lt;@U999&gt; &amp; bye" in payload["blocks"][-1]["elements"][0]["text"]


def test_evidence_too_large_for_one_section_is_trimmed_to_fit(renderer: Renderer) -> None:
    finding = hostile()
    finding.evidence = [EvidenceLine(f"w2: probe {i}", "&<>" * 70) for i in range(40)]
    finding.summary = "s" * 5000
    finding.fix = Fix("\n".join(["step & <more>"] * 500))
    text = sections(slack(renderer, reply_data([finding])))["finding:0"]
    assert len(text) <= 3000
    assert text.count("```") == 4  # evidence and manual blocks, both closed
    assert re.search(r"… 3\d more lines\n```", text)


def test_a_button_value_that_cannot_fit_is_left_out(renderer: Renderer) -> None:
    finding = br_netfilter()
    finding.fix = Fix("m", "node.fix-br-netfilter", {"node": "w" * 3000})
    payload = slack(renderer, reply_data([finding]))
    assert buttons(payload) == []
    assert "*Fix:* `/flannel run node.fix-br-netfilter node=www" in sections(payload)["finding:0"]


# -- more findings than fit ---------------------------------------------------------------------


def many_findings(count: int) -> list[Finding]:
    findings = []
    for i in range(count):
        node = f"w{i:02d}"
        fix = (
            Fix(f"restart flannel on {node}", "flannel.restart-pods", {"nodes": node})
            if i % 2 == 0
            else Fix(f"look at {node} by hand")
        )
        findings.append(
            Finding(
                f"{RULES[i % len(RULES)].id}-{i:02d}",
                SEVERITIES[i % 3],
                (node,),
                f"finding {i} on {node}",
                "mechanism",
                [EvidenceLine(f"{node}: probe", f"output {i}\n" * 8)],
                fix,
            )
        )
    return findings


def test_eighty_findings_are_cut_to_fit_fifty_blocks(renderer: Renderer) -> None:
    findings = many_findings(80)
    data = reply_data(findings, gaps=["could not read events: forbidden"])
    payload = slack(renderer, data)
    blocks = payload["blocks"]
    assert len(blocks) <= 50
    shown = sections(payload)
    # 2 head blocks + gaps leave 47; groups alternate 3 (with button) and 2 blocks; one is kept
    # free for the notice: 9 pairs (45 blocks) fit in 46.
    assert len(shown) == 18
    assert [t.split("*")[1] for t in shown.values()] == [f.id for f in findings[:18]]
    assert blocks[-2]["text"]["text"] == (
        "… and 62 more findings: every finding is in the text file attached below"
    )
    assert blocks[-1]["elements"][0]["text"].startswith("*Not checked:*")
    assert [b["action_id"] for b in buttons(payload)] == [f"plan_fix:{i}" for i in range(0, 18, 2)]
    assert json.loads(buttons(payload)[-1]["value"]) == {
        "runbook": "flannel.restart-pods",
        "params": {"nodes": "w16"},
    }
    assert "… 2 more lines" in shown["finding:0"]

    out = shell(renderer, data)
    assert out.count("\n   why: ") == 80
    assert f"\n80. [{findings[79].severity.upper()}] {findings[79].id} on w79\n" in out
    assert out.count("     … 2 more lines") == 80
    assert "more findings" not in out


def test_the_slack_reply_with_its_mention_still_fits_fifty_blocks() -> None:
    """The thread's reply leads with a mention of the requester: one block more, counted in the
    fifty, so a long diagnose is cut to fit, never sent as its fallback text alone."""
    messages = Messages(TEMPLATES)
    for count, gaps in itertools.product(range(1, 41), ([], ["could not read events"])):
        data = reply_data(many_findings(count), gaps=gaps)
        payload = messages.reply(Reply("diagnose", data), "<@UALICE>", "diagnose")
        blocks = payload["blocks"]
        assert sb.check_limits(payload) == []
        assert blocks[0]["text"]["text"] == "<@UALICE> here it is:"
        assert blocks[1]["type"] == "header", (count, gaps)  # not the fallback text alone
        assert sections(payload), (count, gaps)


def test_findings_that_just_fit_are_not_cut(renderer: Renderer) -> None:
    findings = many_findings(32)  # 16 * 5 blocks = 80: too many; 19 groups are 48 blocks
    payload = slack(renderer, reply_data(findings[:19]))
    assert len(payload["blocks"]) == 50
    assert "more findings" not in json.dumps(payload)


# -- the pieces ---------------------------------------------------------------------------------


def test_truncate_and_mrkdwn() -> None:
    assert sb.truncate("abcdef", 6) == "abcdef"
    assert sb.truncate("abcdefg", 6) == "abcde…"
    assert sb.truncate("abc", 1) == "…"
    assert sb.mrkdwn_escape("a & <b> <@U1>") == "a &amp; &lt;b&gt; &lt;@U1&gt;"
    assert sb.mrkdwn("<@U1>", 100) == "&lt;@U1&gt;"
    for limit in range(1, 14):  # never ends inside an entity, never over the limit
        cut = sb.mrkdwn("ab<<<<", limit)
        assert len(cut) <= limit
        assert re.fullmatch(r"(ab|a|)(&lt;)*…?", cut), (limit, cut)


def test_evidence_block_stays_within_any_budget() -> None:
    evidence = [{"source": f"w{i}: probe", "text": "line & <x>\n" * 5} for i in range(3)]
    for limit in range(0, 400):
        block = sb.evidence_block(evidence, limit)
        assert len(block) <= limit
        if block:
            assert block.startswith("```\n") and block.endswith("\n```")
    assert sb.evidence_block([], 3000) == ""
    full = sb.evidence_block(evidence, 3000)
    assert full.count("  line &amp; &lt;x&gt;") == 6 and "… 9 more lines" in full


def test_groups_that_fit() -> None:
    assert sb.groups_that_fit([[1, 2], [3]], 3) == 2
    assert sb.groups_that_fit([[1, 2], [3], [4]], 3) == 1  # one block kept for the notice
    assert sb.groups_that_fit([[1, 2, 3]], 2) == 0
    assert sb.groups_that_fit([], 0) == 0


def test_plan_fix_value() -> None:
    assert sb.plan_fix_value(None, {"node": "w1"}) is None
    assert sb.plan_fix_value("a.b", {"node": "w1"}) == '{"params":{"node":"w1"},"runbook":"a.b"}'
    assert sb.plan_fix_value("a.b", {"node": "w" * 2000}) is None


def valid_payload() -> dict[str, Any]:
    return {
        "text": "fallback",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "ctx"}]},
            {"type": "section", "block_id": "s", "text": {"type": "mrkdwn", "text": "body"}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Plan fix"},
                        "action_id": "plan_fix:0",
                        "value": "{}",
                    }
                ],
            },
            {"type": "divider"},
        ],
    }


def button(payload: dict[str, Any]) -> dict[str, Any]:
    element: dict[str, Any] = payload["blocks"][3]["elements"][0]
    return element


BREAKS: dict[str, Callable[[dict[str, Any]], object]] = {
    "blocks: 51 > 50": lambda p: p["blocks"].extend([{"type": "divider"}] * 46),
    "blocks[2].text.text: 3001 chars > 3000": lambda p: p["blocks"][2]["text"].update(
        text="x" * 3001
    ),
    "blocks[0].text.text: 151 chars > 150": lambda p: p["blocks"][0]["text"].update(text="x" * 151),
    "blocks[0].text.type: 'mrkdwn' is not one of ('plain_text',)": lambda p: p["blocks"][0][
        "text"
    ].update(type="mrkdwn"),
    "blocks[3].elements[0].text.text: 76 chars > 75": lambda p: button(p)["text"].update(
        text="x" * 76
    ),
    "blocks[3].elements[0].action_id: 256 chars > 255": lambda p: button(p).update(
        action_id="x" * 256
    ),
    "blocks[3].elements[0].value: 2001 chars > 2000": lambda p: button(p).update(value="x" * 2001),
    "blocks[1].elements: 11 not in 1..10": lambda p: p["blocks"][1].update(
        elements=[{"type": "mrkdwn", "text": "c"}] * 11
    ),
    "blocks[1].elements[0].text: 3001 chars > 3000": lambda p: p["blocks"][1]["elements"][0].update(
        text="x" * 3001
    ),
    "blocks[2].block_id: 256 chars > 255": lambda p: p["blocks"][2].update(block_id="b" * 256),
    "blocks[2].text.text: empty": lambda p: p["blocks"][2]["text"].update(text=""),
    "blocks[4].elements[0].action_id: 'plan_fix:0' is used twice": lambda p: p["blocks"].insert(
        4, {"type": "actions", "elements": [dict(button(p))]}
    ),
    "text: the fallback text": lambda p: p.pop("text"),
    "blocks[4]: unchecked block type 'image'": lambda p: p["blocks"].insert(
        4, {"type": "image", "image_url": "https://x", "alt_text": "x"}
    ),
}


def test_check_limits_accepts_a_valid_payload() -> None:
    assert sb.check_limits(valid_payload()) == []


@pytest.mark.parametrize("expected", list(BREAKS))
def test_check_limits_catches_each_limit(expected: str) -> None:
    payload = valid_payload()
    BREAKS[expected](payload)
    problems = sb.check_limits(payload)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_render_needs_the_registered_filters() -> None:
    bare = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined
    )
    with pytest.raises(jinja2.TemplateAssertionError, match="mrkdwn"):
        sb.render_diagnose_slack(bare, reply_data([]))
    assert sb.render_diagnose_slack(Messages(TEMPLATES).renderer.env, reply_data([]))["blocks"]
