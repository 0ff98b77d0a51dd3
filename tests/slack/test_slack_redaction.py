"""Secrets never reach Slack: a diagnose reply quoting a probe whose stderr held a private key,
and every kind of call the adapter's client makes (messages, blocks, updates, ephemeral
messages, file uploads), checked at the Slack Web API stand-in, which records what arrived."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flannel_bot.settings import REPO_ROOT
from flannel_bot.slack.client import UnredactableUpload
from tests.secret_corpus import LOOK_ALIKES, RSA, RSA_BODY, SECRETS
from tests.slack.conftest import SlackBot

SECRET_TEXT = "\n".join(s.text for s in SECRETS)
LEAKS = sorted({fragment for s in SECRETS for fragment in s.leaks})


def leaks_in(text: str) -> list[str]:
    return [fragment for fragment in LEAKS if fragment in text]


def sent(bot: SlackBot) -> str:
    """Everything the stand-in received: every call's parameters and every uploaded file."""
    calls = json.dumps([c.params for c in bot.slack.calls()])
    return calls + b"".join(bot.slack.uploads.values()).decode()


@pytest.fixture
def cluster_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example support bundle, where w2's missing br_netfilter sysctl errors with a private
    key (diagnose quotes that stderr as evidence) and its subnet.env holds every secret."""
    dump = tmp_path_factory.mktemp("leaky") / "dump"
    shutil.copytree(REPO_ROOT / "examples" / "dump", dump)
    err = dump / "probes" / "w2" / "bridge-nf-call-iptables.err"
    err.write_text(err.read_text().rstrip("\n") + f"\n{RSA}\n{SECRET_TEXT}\n")
    (dump / "probes" / "w2" / "subnet-env.txt").write_text(
        f"FLANNEL_NETWORK=10.244.0.0/16\n{RSA}\n"
    )
    return dump


def test_a_diagnose_reply_posts_no_secret_a_probe_printed(bot: SlackBot) -> None:
    assert bot.command("diagnose").status == 200
    reply = bot.message_with("br-netfilter-missing")
    text = json.dumps(reply)
    assert "bridge-nf-call-iptables: No such file or directory" in text
    assert "[REDACTED PRIVATE KEY]" in text
    assert RSA_BODY[0] not in sent(bot) and leaks_in(sent(bot)) == []


def test_every_kind_of_call_leaves_redacted(bot: SlackBot) -> None:
    client = bot.adapter.client
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": SECRET_TEXT[:2900]}},
        {"type": "section", "text": {"type": "plain_text", "text": SECRET_TEXT[-2900:]}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Go"},
                    "action_id": "go",
                    "value": json.dumps({"out": SECRETS[0].text, "token": "s3cr3t-value"}),
                }
            ],
        },
    ]
    posted = client.chat_postMessage(channel="C1", text=SECRET_TEXT, blocks=blocks)
    client.chat_update(channel="C1", ts=str(posted["ts"]), text=SECRET_TEXT, blocks=blocks)
    client.chat_postEphemeral(channel="C1", user="UALICE", text=SECRET_TEXT)
    client.files_upload_v2(
        channel="C1",
        content=f"{SECRET_TEXT}\n{RSA}\n",
        filename="out.txt",
        title=SECRETS[0].text,
        initial_comment=SECRET_TEXT,
    )
    client.files_upload_v2(channel="C1", content=SECRET_TEXT.encode(), filename="out.bin")
    everything = sent(bot)
    assert leaks_in(everything) == [] and "s3cr3t-value" not in everything
    assert all(c.headers.get("authorization") == "Bearer xoxb-test" for c in bot.slack.calls())
    assert len(bot.slack.uploads) == 2


def test_look_alikes_reach_slack_as_they_were(bot: SlackBot) -> None:
    text = "\n".join(a.text for a in LOOK_ALIKES if "<" not in a.text and "&" not in a.text)
    bot.adapter.client.chat_postMessage(channel="C1", text=text)
    bot.adapter.client.files_upload_v2(channel="C1", content=text, filename="a.txt")
    assert bot.slack.calls("chat.postMessage")[-1].params["text"] == text
    assert list(bot.slack.uploads.values())[-1].decode() == text


def test_a_file_the_client_cannot_read_is_refused(bot: SlackBot, tmp_path: Path) -> None:
    secret = tmp_path / "key.pem"
    secret.write_text(RSA)
    with pytest.raises(UnredactableUpload, match="content="):
        bot.adapter.client.files_upload_v2(channel="C1", file=str(secret), filename="key.pem")
    with pytest.raises(UnredactableUpload, match="files_upload_v2"):
        bot.adapter.client.api_call("files.upload", files={"file": str(secret)})
    with pytest.raises(UnredactableUpload, match="UTF-8"):
        bot.adapter.client.files_upload_v2(channel="C1", content=b"\xff\xfe", filename="x")
    assert not bot.slack.uploads and not bot.slack.calls("files.getUploadURLExternal")
