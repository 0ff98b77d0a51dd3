"""Whether the Slack side of an installation works: tokens present for the mode, and accepted.

`flannel-bot doctor` asks this; it lives with the rest of the Slack code because it calls Slack.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from flannel_bot.settings import SlackSettings

__all__ = ["WebClient", "slack_health"]


def slack_health(s: SlackSettings, client: WebClient | None = None) -> tuple[str, str]:
    """("OK" | "WARN" | "FAIL", what to say): the token checked with `auth.test`."""
    if not s.bot_token:
        return "WARN", "not configured: set SLACK_BOT_TOKEN (and see README: Slack)"
    problems = s.problems()
    if problems:
        return "FAIL", "; ".join(problems)
    client = client or WebClient(token=s.bot_token, base_url=s.api_url, timeout=10)
    try:
        who = client.auth_test()
    except SlackApiError as exc:
        return "FAIL", f"Slack refused the bot token: {exc.response.get('error')}"
    except OSError as exc:
        return "FAIL", f"cannot reach Slack at {s.api_url}: {exc}"
    return "OK", f"bot {who.get('user')} in team {who.get('team')} ({s.mode} mode)"
