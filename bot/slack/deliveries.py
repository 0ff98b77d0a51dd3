"""What makes two deliveries of a slash command the same command, so it is done once.

A slash command is one command per `trigger_id`. A request without one (Slack always sends it;
a proxy or another sender may not) is told by its signed bytes: the body and its timestamp name
one command, and the body alone marks that those bytes were seen, so that Slack's retry of them
(`X-Slack-Retry-Num`, the same body signed again at a later second) is known for a copy while
the same text typed again later is not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def command_keys(
    body: Mapping[str, Any], raw_body: str, timestamp: str, retry: bool
) -> tuple[str, ...]:
    """Delivery keys to record for a slash command, in one transaction: the command is done
    when the first of them was not recorded before."""
    trigger = body.get("trigger_id")
    if trigger:
        return (f"command:{trigger}",)
    # Socket Mode hands over no raw body: its parsed form stands in for it
    signed = raw_body or json.dumps(body, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(signed.encode()).hexdigest()
    seen = f"command-body:{digest}"
    if retry:  # a copy: done only when no delivery of these bytes came before it
        return (seen,)
    return (f"command:{digest}:{timestamp}", seen)
