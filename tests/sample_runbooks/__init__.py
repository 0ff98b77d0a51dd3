"""Runbooks that exist only to exercise the engine: node commands, change steps, crashes."""
