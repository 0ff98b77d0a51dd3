"""Who the terminal vouches for: approvals and denials count as the OS login, never a claim."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from flannel_bot.errors import ApprovalRefused, IdentityRefused
from flannel_bot.ports.store import Requester
from flannel_bot.runs.engine import Engine
from flannel_bot.settings import ConfigError, load_settings
from flannel_bot.terminal import Terminal, os_login
from tests.conftest import who


def test_the_login_is_the_process_uid_not_the_environment() -> None:
    assert os_login() == pwd.getpwuid(os.getuid()).pw_name
    free = next(uid for uid in range(60000, 65000) if not _has_entry(uid))
    assert os_login(free) == f"uid:{free}"


def _has_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@pytest.mark.parametrize("verb", ["approve", "deny", "APPROVE"])
def test_a_claimed_name_cannot_approve_or_deny(verb: str) -> None:
    terminal = Terminal("cli", "asmith", claimed="bob", users={"asmith": "alice"})
    with pytest.raises(IdentityRefused) as exc:
        terminal.requester([verb, "1"])
    message = str(exc.value)
    assert "`--user bob` cannot" in message and "(asmith, `alice` to the policy)" in message
    assert "[terminal] users" in message and "\n" not in message


def test_approvals_count_as_the_login_mapped_to_its_policy_name() -> None:
    terminal = Terminal("cli", "asmith", default="bob", users={"asmith": "alice"})
    assert terminal.requester(["approve", "1"]) == Requester(
        "alice", {"adapter": "cli", "user": "alice", "identity": "os-user", "os_user": "asmith"}
    )
    # $USER is no claim: it is ignored for approvals, and other commands are marked asserted
    assert terminal.requester(["run", "x"]).source["identity"] == "asserted"
    claimed_self = Terminal("shell", "asmith", claimed="alice", users={"asmith": "alice"})
    assert claimed_self.requester(["deny", "1"]).source["identity"] == "os-user"


def test_asserted_mode_believes_the_claim_and_says_so() -> None:
    terminal = Terminal("cli", "root", claimed="bob", approver="asserted")
    got = terminal.requester(["approve", "1"])
    assert got.user == "bob" and got.source["identity"] == "asserted"
    assert got.source["os_user"] == "root"


def test_a_login_cannot_approve_the_run_it_requested_under_another_name(engine: Engine) -> None:
    carol = Terminal("cli", "ops1", claimed="carol").as_claimed()  # ops1 asks as carol
    run = engine.start("flannel.restart-pods@1.1.0", {"nodes": "w2"}, carol)
    assert run.status == "awaiting_approval"
    bob = Terminal("cli", "ops1", users={"ops1": "bob"}).requester(["approve", str(run.id)])
    with pytest.raises(ApprovalRefused, match="requested from the login ops1 \\(as carol\\)"):
        engine.approve(run.id, bob)
    assert engine.approve(run.id, who("bob")).status == "succeeded"  # another person may


def test_terminal_settings(tmp_path: Path) -> None:
    config = tmp_path / "flannel-bot.toml"
    config.write_text('[terminal]\napprover = "asserted"\nusers = { asmith = "alice" }\n')
    got = load_settings(config, {"HOME": str(tmp_path), "FLANNEL_BOT_USER": "bob"}).terminal
    assert (got.approver, dict(got.users), got.env_user) == ("asserted", {"asmith": "alice"}, "bob")
    for bad, message in (
        ('approver = "yes"', 'approver must be "os-user"'),
        ("users = { asmith = 1 }", "must map OS logins to policy names"),
        ("user = 1", "has no setting `user`"),
    ):
        config.write_text(f"[terminal]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_settings(config, {"HOME": str(tmp_path)})
