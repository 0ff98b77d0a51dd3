"""`bot.core.kube_proxy_config` as locked runbook versions import it."""

from flannel_bot.diagnosis.kube_proxy_config import SCHEMA, suggestion, unknown_fields

__all__ = ["SCHEMA", "suggestion", "unknown_fields"]
