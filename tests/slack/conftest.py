"""A running flannel-bot Slack app (HTTP mode) wired to a fake Slack and a recorded cluster."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.settings import Settings, load_settings
from flannel_bot.slack.app import SlackAdapter
from flannel_bot.slack.serve import http_server
from flannel_bot.wiring import build_app
from tests.fakes import FakeClock
from tests.slack.fake_slack import PROXY_ENV_VARS, FakeSlack
from tests.slack.signing import (
    block_actions_payload,
    interaction_body,
    sign,
    slash_command_body,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
USERS = {"UALICE": "alice", "UBOB": "bob", "UCAROL": "carol", "UMAL": "mallory"}
EXAMPLE_CLUSTER = REPO / "examples" / "cluster.json"
CONFIG = f"""
recording = "{EXAMPLE_CLUSTER}"

[policy.groups]
operators = ["alice"]
approvers = ["bob"]

[slack]
mode = "http"
host = "127.0.0.1"
port = 0
progress_interval = 0.2
audit_channel = "CAUDIT"

[slack.users]
{chr(10).join(f'{k} = "{v}"' for k, v in USERS.items())}

[slack.usergroups]
SAPPROVERS = "approvers"
"""


@dataclass
class Response:
    status: int
    body: bytes


@dataclass
class SlackBot:
    slack: FakeSlack
    adapter: SlackAdapter
    url: str
    clock: FakeClock
    channel: str = "C1"

    def post(self, body: bytes, headers: dict[str, str]) -> Response:
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Response(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read())

    def command(self, text: str, user: str = "UALICE", **kw: Any) -> Response:
        body = slash_command_body(text, user_id=user, user_name=USERS.get(user, user), **kw)
        return self.post(body, sign(SECRET, body))

    def click(self, action_id: str, value: str, user: str, message_ts: str, **kw: Any) -> Response:
        payload = block_actions_payload(user, self.channel, message_ts, action_id, value, **kw)
        body = interaction_body(payload)
        return self.post(body, sign(SECRET, body))

    def messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The params of the first `count` chat.postMessage calls, waiting for them."""
        return [c.params for c in self.slack.wait_for("chat.postMessage", count, timeout)]

    def message_with(self, text: str, timeout: float = 10.0) -> dict[str, Any]:
        """The params of the first chat.postMessage or chat.update whose body contains `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for c in self.slack.calls():
                if c.method in ("chat.postMessage", "chat.update") and text in json.dumps(c.params):
                    return c.params
            time.sleep(0.02)
        seen = [(c.method, c.params.get("text")) for c in self.slack.calls()]
        raise AssertionError(f"no message with {text!r}; saw {seen}")


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    for name in PROXY_ENV_VARS:  # slack_sdk would send even 127.0.0.1 through a proxy
        monkeypatch.delenv(name, raising=False)
    with FakeSlack() as fake:
        fake.usergroups = {"SAPPROVERS": ["UCAROL"]}
        yield fake
    assert fake.errors == []


@pytest.fixture
def cluster_file(request: pytest.FixtureRequest) -> Path:
    """The recorded cluster the bot works on; a test may pass its own (indirect parametrize)."""
    return Path(getattr(request, "param", EXAMPLE_CLUSTER))


@pytest.fixture
def bot_config(cluster_file: Path) -> str:
    """The bot's TOML settings; a test module may override this fixture."""
    return CONFIG.replace(str(EXAMPLE_CLUSTER), str(cluster_file))


def bot_settings(slack: FakeSlack, tmp_path: Path, text: str) -> Settings:
    """The bot's settings from TOML `text`, its Slack the fake, its audit log in `tmp_path`."""
    config = tmp_path / "flannel-bot.toml"
    config.write_text(text)
    env = {
        "HOME": str(tmp_path),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.base_url,
    }
    return load_settings(config, env, overrides={"db": str(tmp_path / "bot.db")})


@pytest.fixture
def bot(slack: FakeSlack, tmp_path: Path, bot_config: str) -> Iterator[SlackBot]:
    settings = bot_settings(slack, tmp_path, bot_config)
    clock = FakeClock()
    app = build_app(settings, clock)
    adapter = SlackAdapter(app, settings.slack)
    server = http_server(adapter, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    adapter.progress.start()
    host, port = server.server_address[:2]
    try:
        yield SlackBot(slack, adapter, f"http://{host}:{port}/slack/events", clock)
    finally:
        server.shutdown()
        adapter.close()
        adapter.progress.stop()
