"""Pure logic: command grammar, runbook API, plans, policy and the engine. No I/O libraries here."""
