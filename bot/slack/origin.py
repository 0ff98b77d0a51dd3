"""Where a Slack approval may come from: the workspace, and for a click the channel, the run was
asked for in.

A run asked for in Slack records the workspace (`team_id`) and channel of the request, and its
approval message (with the Approve and Deny buttons) is posted in that channel's thread. Slack
signs every request of every workspace the app is installed in, and a shared channel carries
other organisations' people, so a valid signature does not say a click belongs to this run: a
click counts only from the run's workspace and channel, and a typed `approve`/`deny` only from
its workspace. Pure: the run and the request's ids in, the refusal (or None) out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flannel_bot.errors import UserError, WrongChannel, WrongWorkspace
from flannel_bot.ports.store import RunRecord


def team_of(body: Mapping[str, Any]) -> str:
    """The workspace a request came from: a slash command's `team_id`, an interaction's
    `team.id` (its user's `team_id` where an org-wide install sends no team)."""
    if body.get("team_id"):
        return str(body["team_id"])
    team = body.get("team") or {}
    user = body.get("user") or {}
    return str(team.get("id") or user.get("team_id") or "")


def click_refusal(run: RunRecord, team: str, channel: str) -> UserError | None:
    """Why a click on run's Approve or Deny does not count, or None when it does."""
    source = run.source
    typed = f"`/flannel approve {run.id}` (or deny)"
    if source.get("adapter") != "slack" or not source.get("channel"):
        return WrongChannel(
            f"run {run.id} was not asked for in Slack, so no button of this app decides it; "
            f"type {typed} instead"
        )
    refusal = command_refusal(run, team)
    if refusal is not None:
        return refusal
    if not source.get("team_id"):
        return WrongWorkspace(
            f"run {run.id} was asked for before flannel-bot recorded Slack workspaces, so its "
            f"buttons cannot be checked; type {typed} in its thread instead"
        )
    if source["channel"] != channel:
        return WrongChannel(
            f"run {run.id} waits for approval in channel {source['channel']}, not here: approve or "
            f"deny it with the buttons in that channel's thread"
        )
    return None


def command_refusal(run: RunRecord, team: str) -> UserError | None:
    """Why a typed `approve`/`deny` from Slack workspace `team` does not count for run, or None
    (a run asked for at the terminal has no workspace, so any may decide it)."""
    asked_in = run.source.get("team_id")
    if asked_in and asked_in != team:
        return WrongWorkspace(
            f"run {run.id} was asked for in another Slack workspace ({asked_in}); approve or "
            f"deny it from that workspace"
        )
    return None
