"""A node that echoes secrets: none of them reaches the audit store, a Slack message, or the
audit report uploaded to Slack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.slack.conftest import EXAMPLE_CLUSTER, SlackBot
from tests.slack.test_slack_app import wait_status

SECRETS = (
    "AKIAXXXXSECRETXXXX",
    "eyJhbGciOiJIUzI1NiJ9.secretpayload1234.sig",
    "xoxb-999999-leakedtoken",
)


@pytest.fixture
def cluster_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example cluster, where `cat /run/flannel/subnet.env` on w2 prints credentials."""
    data = json.loads(EXAMPLE_CLUSTER.read_text())
    data.setdefault("commands", {}).setdefault("w2", {})["cat /run/flannel/subnet.env"] = {
        "exit_code": 0,
        "stdout": "FLANNEL_NETWORK=10.244.0.0/16\n"
        f"api_key={SECRETS[0]}\nAuthorization: Bearer {SECRETS[1]}\n{SECRETS[2]}\n",
    }
    path = tmp_path_factory.mktemp("secret") / "cluster.json"
    path.write_text(json.dumps(data))
    return path


def test_secrets_in_a_step_output_reach_neither_slack_nor_a_report(bot: SlackBot) -> None:
    bot.command("run node.check node=w2")  # read-only: runs the probes, no approval needed
    bot.message_with("Audit trail")
    assert not bot.slack.calls("chat.postEphemeral"), bot.slack.calls("chat.postEphemeral")
    wait_status(bot, 1, "succeeded")
    bot.command("audit report format=jsonl")
    bot.slack.wait_for("files.completeUploadExternal")
    store = bot.adapter.app.store
    raw = "\n".join(str(row) for row in store.db.execute("SELECT * FROM events").fetchall())
    assert "FLANNEL_NETWORK=10.244.0.0/16" in raw  # the output was kept, redacted
    sent = json.dumps([c.params for c in bot.slack.calls()])
    uploaded = b"".join(bot.slack.uploads.values()).decode()
    assert "FLANNEL_NETWORK" in uploaded
    for secret in SECRETS:
        assert secret not in raw and secret not in sent and secret not in uploaded, secret
