"""flannel-bot: diagnose and repair Flannel networking from chat, with approvals and audit."""

# the one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]) and
# `flannel-bot --version` prints it
__version__ = "0.1.0"
