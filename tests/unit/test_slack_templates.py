"""Every Slack template stays within Block Kit's limits, with ordinary and with hostile data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flannel_bot.diagnosis.findings import Finding, Fix
from flannel_bot.service.handler import Reply
from flannel_bot.settings import REPO_ROOT
from flannel_bot.slack.blocks import check_limits
from flannel_bot.slack.messages import Messages

MESSAGES = Messages(REPO_ROOT / "templates")
NASTY = "<!channel> `x```y` & <@U1> " + "é" * 50


def plan_view(steps: int, actions: int, text: str = "") -> dict[str, Any]:
    return {
        "cluster": "prod-eu-" + "x" * 54,  # the longest cluster name
        "ref": "node.fix-br-netfilter@1.0.0",
        "summary": "Load br_netfilter " + text,
        "targets": [f"node/w{i}" for i in range(actions)],
        "short_hash": "0123456789ab",
        "plan_hash": "sha256:" + "0" * 64,
        "params": {"node": "w2", "disrupt": True, "nodes": ["w1", "w2"]},
        "steps": [
            {
                "index": i,
                "title": f"step {i} {text}",
                "risk": ("read", "change", "destructive")[i % 3],
                "actions": [
                    {"render": f"ssh w{j} -- sysctl -w a=1 {text}" * 3} for j in range(actions)
                ],
            }
            for i in range(steps)
        ],
    }


def run_view(status: str, steps: int, actions: int, text: str = "") -> dict[str, Any]:
    return {
        "id": 7,
        "cluster": "prod-eu-" + "x" * 54,
        "ref": "node.fix-br-netfilter@1.0.0",
        "status": status,
        "short_hash": "0123456789ab",
        "plan_hash": "sha256:" + "0" * 64,
        "expires_at": "2026-11-22T01:00:00Z",
        "approvals_required": 2,
        "approvals": [{"approver": "bob"}],
        "plan": plan_view(steps, actions, text),
    }


@pytest.mark.parametrize(("steps", "actions", "text"), [(3, 2, ""), (60, 8, NASTY * 5)])
def test_plan_and_approval_fit(steps: int, actions: int, text: str) -> None:
    plan = MESSAGES.plan(plan_view(steps, actions, text), "<@U1>", '{"ref":"x"}')
    assert check_limits(plan) == [] and "Start run" in str(plan)
    for status in ("awaiting_approval", "running", "succeeded", "denied", "expired"):
        body = MESSAGES.approval(run_view(status, steps, actions, text), "<@U1>", "Approved")
        assert check_limits(body) == [], (status, check_limits(body))
        assert ("approve" in str(body)) == (status == "awaiting_approval")


@pytest.mark.parametrize("text", ["", NASTY * 100])
def test_progress_fits(text: str) -> None:
    for final in (False, True):
        p = {
            "run_id": 3,
            "ref": "flannel.restart-pods@1.2.0",
            "status": "succeeded" if final else "running",
            "step": 2,
            "steps": 3,
            "title": "Restart " + text,
            "node": "w2" + text,
            "elapsed": "0:14",
            "detail": text or "`DELETE pod`",
            "final": final,
            "first_event": 4,
            "last_event": 20,
            "head": "f" * 64,
        }
        assert check_limits(MESSAGES.progress(p)) == []


@pytest.mark.parametrize("lines", [1, 40, 5000])
def test_long_text_replies_are_cut_with_a_count(lines: int) -> None:
    body = "\n".join(f"{i:05d} {NASTY}" for i in range(lines))
    payload = MESSAGES._render(
        "text", title="`/flannel status`", body=body, mention="<@U1>", command="status"
    )
    assert check_limits(payload) == []
    text = str(payload)
    assert ("more lines" in text) == (lines == 5000)
    assert "00000" in text and (lines == 5000 or f"{lines - 1:05d}" in text)
    assert "<!channel>" not in text.replace("&lt;!channel&gt;", "")


def test_a_body_over_the_limits_is_sent_as_text_with_a_note() -> None:
    too_big = {"text": "t", "blocks": [{"type": "divider"}] * 60}
    fitted = Messages.fit(too_big)
    assert check_limits(fitted) == [] and "shortened" in str(fitted)


def test_buttons_carry_the_cluster_they_were_made_on() -> None:
    """A Plan fix or Start run click must act on the cluster the message was about, whatever
    the default cluster is when it is clicked."""
    finding = Finding(
        id="br-netfilter-missing",
        severity="critical",
        nodes=("w2",),
        summary="br_netfilter is not loaded",
        mechanism="",
        evidence=[],
        fix=Fix("modprobe br_netfilter", "node.fix-br-netfilter", {"node": "w2"}),
    ).to_json()
    finding["fix"]["cluster"] = "prod-us"  # as the service sets it when it serves several
    summary = {"critical": 1, "warning": 0, "info": 0, "nodes": 2, "probed": 2}
    view = {"cluster": "prod-us", "source": "live", "nodes": [], "findings": [finding]}
    reply = Reply("diagnose", {**view, "gaps": [], "summary": summary})
    body = MESSAGES.reply(reply, "<@U1>", "diagnose --cluster prod-us")
    values = [
        json.loads(e["value"])
        for b in body["blocks"]
        for e in b.get("elements", []) + ([b["accessory"]] if "accessory" in b else [])
        if e.get("type") == "button"
    ]
    assert values == [
        {"runbook": "node.fix-br-netfilter", "params": {"node": "w2"}, "cluster": "prod-us"}
    ]
    assert "*Cluster:* prod-us" in json.dumps(body)
    start = Messages.start_value(plan_view(1, 1))
    assert start is not None and json.loads(start)["cluster"] == plan_view(1, 1)["cluster"]
