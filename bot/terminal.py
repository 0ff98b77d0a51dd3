"""Who is at the terminal: the name `flannel-bot approve`, `deny` and the shell count as.

`--user` and FLANNEL_BOT_USER are what a person says about themselves; the bot cannot check
them, so they never suffice to approve or deny (with `kubectl exec` into the pod anyone could
approve anyone's run). Approvals and denials at the terminal count as the OS login running
flannel-bot: the process's uid in the password database, never $USER, mapped to a policy name by
`[terminal] users`. In the pod that login is the image's `flannel-bot` user, which no policy
should name, so approvals there happen in Slack. `[terminal] approver = "asserted"` believes
--user instead, for a lab or a demo where one login plays several people.

Every terminal event records how its name was established (`identity`: `os-user` or
`asserted`) and the login (`os_user`), so the engine can tell a login approving the run it
requested under another name, and a reader of the audit log can tell a claim from a fact.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flannel_bot.errors import IdentityRefused
from flannel_bot.ports.store import Requester

OS_USER = "os-user"
ASSERTED = "asserted"
APPROVERS = (OS_USER, ASSERTED)
DECISIONS = ("approve", "deny")


def os_login(uid: int | None = None) -> str:
    """The login name of `uid` (this process's by default); `uid:N` when it has none."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's uid with no passwd entry
        return f"uid:{uid}"


@dataclass(frozen=True)
class Terminal:
    """One terminal session: the login behind it and the name it claims, if any."""

    adapter: str  # "cli" or "shell"
    login: str
    claimed: str = ""  # --user or FLANNEL_BOT_USER
    default: str = ""  # $USER, used when nothing is claimed
    approver: str = OS_USER
    users: Mapping[str, str] = field(default_factory=dict)  # login -> policy name

    @property
    def name(self) -> str:
        """The policy name of the login: what the bot can vouch for."""
        return self.users.get(self.login, self.login)

    def requester(self, words: Sequence[str]) -> Requester:
        """Who asks for `words`. Raises IdentityRefused when an approval or denial claims a name
        that is not the login's."""
        verb = words[0].lower() if words else ""
        if verb not in DECISIONS or self.approver == ASSERTED:
            return self.as_claimed()
        if self.claimed and self.claimed != self.name:
            raise IdentityRefused(
                f"`--user {self.claimed}` cannot {verb} here: at the terminal, approvals and "
                f"denials count as the login running flannel-bot ({self.login}, `{self.name}` "
                f"to the policy), because a name typed here cannot be checked. {verb.title()} "
                f"as that person's own login (map logins to names in [terminal] users), or in "
                f"Slack"
            )
        return Requester(self.name, self._source(self.name, OS_USER))

    def as_claimed(self) -> Requester:
        """The name as given (else the login's), marked asserted unless it is the login's."""
        user = self.claimed or self.default or self.name
        return Requester(user, self._source(user, OS_USER if user == self.name else ASSERTED))

    def _source(self, user: str, identity: str) -> dict[str, Any]:
        return {"adapter": self.adapter, "user": user, "identity": identity, "os_user": self.login}
