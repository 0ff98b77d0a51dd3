"""`bot.core.probes` as locked runbook versions import it: the documented probe set."""

from flannel_bot.ports.probes import BY_ID, PROBES, Probe

__all__ = ["BY_ID", "PROBES", "Probe"]
