"""Who may run which runbooks and who may approve them.

Principals in rules are group names, `user:<name>` for one person, or `*` for anyone.
Defaults: anyone may run read-only runbooks; runbooks that change things may be requested by
`operators` and `approvers`; one approval from `approvers`; approvals expire after 30 minutes;
nobody approves their own run, whatever the configuration says. From a chat channel, only
`audit_all_channels` (nobody by default) may read another channel's audit trail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from flannel_bot.errors import ApprovalRefused, NotAllowed
from flannel_bot.runs.actions import Risk
from flannel_bot.runs.runbook import Runbook

ANYONE = "*"


@dataclass(frozen=True)
class RunbookRule:
    run: tuple[str, ...] | None = None
    approve: tuple[str, ...] | None = None
    approvals: int | None = None


@dataclass(frozen=True)
class Policy:
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    run_read: tuple[str, ...] = (ANYONE,)
    run_change: tuple[str, ...] = ("operators", "approvers")
    approve: tuple[str, ...] = ("approvers",)
    approvals: int = 1
    approval_ttl: timedelta = timedelta(minutes=30)
    change_needs_approval: bool = False
    rules: Mapping[str, RunbookRule] = field(default_factory=dict)
    audit_all_channels: tuple[str, ...] = ()

    def _rule(self, runbook: Runbook) -> RunbookRule:
        return self.rules.get(runbook.ref) or self.rules.get(runbook.id) or RunbookRule()

    def _matches(self, user: str, principals: tuple[str, ...]) -> bool:
        for p in principals:
            if p == ANYONE or p == f"user:{user}" or user in self.groups.get(p, frozenset()):
                return True
        return False

    def groups_of(self, user: str) -> list[str]:
        return sorted(g for g, members in self.groups.items() if user in members)

    @staticmethod
    def _describe(principals: tuple[str, ...]) -> str:
        names = [
            p.removeprefix("user:") if p.startswith("user:") else f"group `{p}`" for p in principals
        ]
        return " or ".join(names) if names else "nobody (the rule allows no one)"

    def check_run(self, user: str, runbook: Runbook) -> None:
        rule = self._rule(runbook)
        allowed = rule.run
        if allowed is None:
            allowed = self.run_read if runbook.risk is Risk.READ else self.run_change
        if not self._matches(user, allowed):
            raise NotAllowed(
                f"{user} may not run {runbook.ref}: it needs {self._describe(allowed)}; "
                "ask someone with that role to run it"
            )

    def check_approve(self, user: str, requester: str, runbook: Runbook) -> None:
        if user == requester:
            raise ApprovalRefused(
                f"{user} requested this run and cannot approve it; another member of "
                f"{self._describe(self.approvers_for(runbook))} must approve"
            )
        allowed = self.approvers_for(runbook)
        if not self._matches(user, allowed):
            raise NotAllowed(
                f"{user} may not approve {runbook.ref}: approving needs {self._describe(allowed)}"
            )

    def approvers_for(self, runbook: Runbook) -> tuple[str, ...]:
        rule = self._rule(runbook)
        return rule.approve if rule.approve is not None else self.approve

    def approvals_required(self, runbook: Runbook) -> int:
        rule = self._rule(runbook)
        if rule.approvals is not None:
            return max(1, rule.approvals)
        return max(1, runbook.approvals or self.approvals)

    def audits_all_channels(self, user: str) -> bool:
        """Whether `user` may read any channel's audit trail, or the whole log, from anywhere."""
        return self._matches(user, self.audit_all_channels)

    def check_audit_elsewhere(self, user: str, what: str) -> None:
        """A channel's audit trail is posted only in that channel; reading `what` (another
        channel's trail) from a channel needs `audit_all_channels`."""
        if self.audits_all_channels(user):
            return
        who = (
            f"ask {self._describe(self.audit_all_channels)}, who may ([policy] audit_all_channels)"
            if self.audit_all_channels
            else "have [policy] audit_all_channels name who may read any channel's trail"
        )
        raise NotAllowed(
            f"{user} may not read {what} here: a channel's audit trail is posted only in that "
            f"channel; ask there, or {who}"
        )

    def gates(self, risk: Risk) -> bool:
        """Whether a step of this risk waits for approval."""
        return risk is Risk.DESTRUCTIVE or (risk is Risk.CHANGE and self.change_needs_approval)
