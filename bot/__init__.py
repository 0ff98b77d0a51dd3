"""flannel-bot: diagnose and repair Flannel networking from chat, with approvals and audit."""

__version__ = "0.1.0"
