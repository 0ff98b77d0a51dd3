"""Names that runbook versions locked before the re-cut import; re-exports only, nothing new here.

A shipped runbook version is hash-locked byte for byte, so its `from bot.core.runbook import ...`
stays valid through these modules. New runbooks import `bot.runbook`.
"""
