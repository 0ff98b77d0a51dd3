"""Which part of the audit trail a request may read, given where it was asked.

A channel's audit trail is posted only in that channel. A report asked from a chat channel
covers that channel, whatever else it selects (run=, user=, node=...); naming another channel is
refused, and so is `audit run N` for a run asked for elsewhere. The principals of `[policy]
audit_all_channels` (nobody by default) may read any channel, or the whole log, from anywhere.
The CLI and the shell have no channel: whoever runs them on the bot's host can read the SQLite
file itself, so the policy would protect nothing there.
"""

from __future__ import annotations

from collections.abc import Mapping

from flannel_bot.ports.store import Requester, RunRecord
from flannel_bot.runs.policy import Policy


def confined_to(who: Requester, policy: Policy) -> str | None:
    """The channel `who` may read the trail of, or None for every channel."""
    here = who.source.get("channel")
    if not here or policy.audits_all_channels(who.user):
        return None
    return str(here)


def report_selection(asked: Mapping[str, str], who: Requester, policy: Policy) -> dict[str, str]:
    """The selection a report may cover: confined to the channel asked in, for a requester who
    may not read others; naming another channel is refused (NotAllowed)."""
    here = confined_to(who, policy)
    if here is None:
        return dict(asked)
    there = asked.get("channel")
    if there is not None and there != here:
        policy.check_audit_elsewhere(who.user, f"channel {there}'s audit trail")
    return {**asked, "channel": here}


def check_run_trail(run: RunRecord, who: Requester, policy: Policy) -> None:
    """A run's trail is shown in the channel it was asked in (NotAllowed elsewhere)."""
    here = confined_to(who, policy)
    if here is not None and run.source.get("channel") != here:
        policy.check_audit_elsewhere(who.user, f"the trail of run {run.id}, asked elsewhere")
