"""Who a Slack user is to the policy: a mapped name, and groups from Slack user groups.

The policy speaks of users and groups by name (`alice`, `approvers`). `[slack.users]` maps Slack
user ids to those names (an unmapped user is `slack:<id>`, which no group names unless a user
group brings it in); `[slack.usergroups]` makes the members of a Slack user group members of a
policy group, read through `usergroups.users.list` and cached for `usergroup_ttl` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from flannel_bot.runs.policy import Policy
from flannel_bot.settings import SlackSettings

log = logging.getLogger(__name__)


class Identity:
    def __init__(
        self,
        settings: SlackSettings,
        client: WebClient,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._members: dict[str, frozenset[str]] = {}
        self._fetched_at = float("-inf")

    def name(self, user_id: str) -> str:
        return self.settings.users.get(user_id) or f"slack:{user_id}"

    def group_members(self) -> dict[str, frozenset[str]]:
        """Policy group -> names, from the configured Slack user groups (cached)."""
        if not self.settings.usergroups:
            return {}
        with self._lock:
            if self._monotonic() - self._fetched_at < self.settings.usergroup_ttl:
                return dict(self._members)
            members: dict[str, set[str]] = {}
            for usergroup, group in self.settings.usergroups.items():
                try:
                    reply = self.client.usergroups_users_list(usergroup=usergroup)
                except SlackApiError as exc:
                    # keep what we knew: a Slack hiccup must not strip everyone's role
                    log.warning("cannot read Slack user group %s: %s", usergroup, exc)
                    return dict(self._members)
                ids = reply.get("users") or []
                members.setdefault(group, set()).update(self.name(u) for u in ids)
            self._members = {g: frozenset(m) for g, m in members.items()}
            self._fetched_at = self._monotonic()
            return dict(self._members)

    def policy(self, base: Policy) -> Policy:
        """`base` with the Slack user groups' members added to its groups."""
        extra = self.group_members()
        if not extra:
            return base
        groups = dict(base.groups)
        for group, names in extra.items():
            groups[group] = groups.get(group, frozenset()) | names
        return dataclasses.replace(base, groups=groups)
