"""How the SSH executor reaches nodes, as settings: kept apart from the executor so that reading
the configuration loads no SSH library (paramiko is imported only where a node is reached)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def parse_host(value: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (address, port or None)."""
    text = value.strip()
    port: str | None = None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"cannot parse host {value!r}: expected [address]:port")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not host:
        raise ValueError(f"cannot parse host {value!r}: no address")
    if port is None:
        return host, None
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"cannot parse host {value!r}: port must be 1-65535")
    return host, int(port)


@dataclass(frozen=True)
class SshSettings:
    """How to reach nodes; `hosts` and ssh_config entries override these defaults per node.

    `hosts` maps a node name to `address`, `address:port` or `[v6-address]:port`.
    `sudo` is what `run`/`run_many` do when the caller does not say.
    Host keys are looked up under node names; `known_hosts_by_address` also accepts an entry
    under the address when the name has none (weaker: the address may come from the Node object).
    """

    user: str = "root"
    port: int = 22
    private_key: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    ssh_config: Path | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    output_cap_bytes: int = 1024 * 1024
    sudo: bool = False
    hosts: Mapping[str, str] = field(default_factory=dict)
    max_workers: int = 8
    known_hosts_by_address: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"ssh port must be 1-65535, got {self.port}")
        for name in ("connect_timeout", "command_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ssh {name} must be positive, got {getattr(self, name)}")
        if self.output_cap_bytes < 1:
            raise ValueError(
                f"ssh output_cap_bytes must be at least 1, got {self.output_cap_bytes}"
            )
        if self.max_workers < 1:
            raise ValueError(f"ssh max_workers must be at least 1, got {self.max_workers}")
        if not isinstance(self.known_hosts_by_address, bool):
            raise ValueError("ssh known_hosts_by_address must be true or false")
        for node, value in self.hosts.items():
            try:
                parse_host(value)
            except ValueError as exc:
                raise ValueError(f"ssh hosts[{node!r}]: {exc}") from None
