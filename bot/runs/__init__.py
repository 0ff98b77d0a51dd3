"""The runs wing: the runbook API, plans, policy, and the engine that moves a run through states.

Pure: clusters and nodes are reached through the ports' executor Protocols, the audit log
through the `Store` port.
"""
