"""Runbook versions, one module each (`<id>_v<major>_<minor>_<patch>.py`), and their lock file.

A version that has shipped is never edited: copy the module, bump VERSION, run
`flannel-bot runbooks lock`. `tests/runbooks/test_lock.py` fails otherwise.
"""
