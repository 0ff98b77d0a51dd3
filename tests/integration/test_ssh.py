"""The SSH executor against real OpenSSH servers: three `sshd`s on 127.0.0.1, key-only login.

Nodes n1..n3 are mapped to their sshd with `hosts` values of the form `127.0.0.1:PORT`, and
known_hosts lists their keys under the node names (n1 plain, n2 and n3 hashed). Their
sessions get a private HOME (so the VM's .bashrc does not run) and a PATH starting with a
directory holding a `sudo` stand-in (sudo is not installed here) that records its arguments.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest

from flannel_bot.errors import (
    AuthenticationFailed,
    CommandTimeout,
    ExecutorError,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    NodeUnreachable,
    NodeUnresolved,
)
from flannel_bot.executors.ssh import SshExecutor, remote_command_line
from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.ports.nodes import NodeExecutor
from flannel_bot.process.metrics import METRICS
from flannel_bot.wiring import count_ssh_error

pytestmark = pytest.mark.integration

SSHD = Path("/usr/sbin/sshd")
NODES = ("n1", "n2", "n3")
FAKE_SUDO = """#!/bin/sh
printf 'sudo:%s\\n' "$*" >&2
[ "$1" = -n ] && [ "$2" = -- ] || exit 99
shift 2
exec "$@"
"""


@dataclass
class Sshd:
    node: str
    port: int
    proc: subprocess.Popen[bytes]
    host_key_file: Path

    @property
    def host_key(self) -> paramiko.PKey:
        return paramiko.PKey.from_path(self.host_key_file)

    @property
    def host_key_pub(self) -> Path:
        return self.host_key_file.with_suffix(".pub")

    address: str = "127.0.0.1"

    @property
    def address_name(self) -> str:
        """How OpenSSH (and plain ssh-keyscan) files this server's key: by address."""
        return f"[{self.address}]:{self.port}"

    def known_hosts_line(self, name: str) -> str:
        key = self.host_key
        return f"{name} {key.get_name()} {key.get_base64()}\n"


@dataclass
class Lab:
    root: Path
    user_key: Path
    known_hosts: Path
    sshds: dict[str, Sshd]

    def settings(self, **overrides: Any) -> SshSettings:
        base: dict[str, Any] = {
            "user": "root",
            "private_key": self.user_key,
            "known_hosts": self.known_hosts,
            "hosts": {n: f"127.0.0.1:{s.port}" for n, s in self.sshds.items()},
            "connect_timeout": 3.0,
            "command_timeout": 10.0,
        }
        return SshSettings(**{**base, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def descendants(pid: int) -> list[int]:
    """Session processes: sshd forks one per connection (in a new session, so not its group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_tree(pid: int, sig: signal.Signals) -> list[int]:
    pids = [pid, *descendants(pid)]
    for p in pids:
        with suppress(ProcessLookupError):
            os.kill(p, sig)
    return pids


@contextmanager
def frozen(sshd: Sshd) -> Iterator[None]:
    """SIGSTOP the listener and its sessions, as a hung node would look from outside."""
    pids = signal_tree(sshd.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in pids:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


def start_sshd(
    root: Path,
    node: str,
    authorized_keys: Path,
    home: Path,
    bin_dir: Path,
    address: str = "127.0.0.1",
    port: int | None = None,
) -> Sshd:
    host_key = keygen(root / f"{node}_host_ed25519", node)
    port = port or free_port()
    config = root / f"{node}_sshd_config"
    config.write_text(
        f"Port {port}\n"
        f"ListenAddress {address}\n"
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "PidFile none\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "LogLevel ERROR\n"
        f"SetEnv HOME={home} PATH={bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
    log = (root / f"{node}_sshd.log").open("wb")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)], stderr=log, start_new_session=True
    )
    return Sshd(node, port, proc, host_key, address)


def wait_for_banner(sshd: Sshd, root: Path) -> None:
    until = time.monotonic() + 10
    while time.monotonic() < until:
        if sshd.proc.poll() is not None:
            log = (root / f"{sshd.node}_sshd.log").read_text()
            pytest.fail(f"sshd for {sshd.node} exited {sshd.proc.returncode}: {log}")
        with suppress(OSError), socket.create_connection((sshd.address, sshd.port), 1) as s:
            if s.recv(4).startswith(b"SSH-"):
                return
        time.sleep(0.05)
    pytest.fail(f"sshd for {sshd.node} did not answer on port {sshd.port}")


def stop_sshd(sshd: Sshd) -> None:
    pids = signal_tree(sshd.proc.pid, signal.SIGCONT)
    for p in reversed(pids):
        with suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    try:
        sshd.proc.wait(5)
    except subprocess.TimeoutExpired:
        sshd.proc.kill()
        sshd.proc.wait(5)
    for p in pids:
        with suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not SSHD.exists():
        pytest.fail(f"{SSHD} is missing: apt-get install -y openssh-server")
    # sshd's privilege separation directory; Debian creates it only when the service starts.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root = tmp_path_factory.mktemp("sshd")
    user_key = keygen(root / "id_ed25519", "flannel-bot-test")
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text(user_key.with_suffix(".pub").read_text())
    home = root / "home"
    home.mkdir()
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text(FAKE_SUDO)
    (bin_dir / "sudo").chmod(0o755)
    sshds: dict[str, Sshd] = {}
    try:
        for node in NODES:
            sshds[node] = start_sshd(root, node, authorized_keys, home, bin_dir)
        for sshd in sshds.values():
            wait_for_banner(sshd, root)
        lines = []
        for node, sshd in sshds.items():
            # n1 plain, n2 and n3 hashed (as `HashKnownHosts yes` writes them).
            name = node if node == "n1" else paramiko.HostKeys.hash_host(node)
            lines.append(sshd.known_hosts_line(name))
        known_hosts = root / "known_hosts"
        known_hosts.write_text("".join(lines))
        yield Lab(root, user_key, known_hosts, sshds)
    finally:
        for sshd in sshds.values():
            stop_sshd(sshd)


@pytest.fixture
def make_executor(lab: Lab) -> Iterator[Callable[..., SshExecutor]]:
    made: list[SshExecutor] = []

    def make(resolve: Callable[[str], str] | None = None, **overrides: Any) -> SshExecutor:
        executor = SshExecutor(lab.settings(**overrides), resolve=resolve)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


@pytest.fixture
def executor(make_executor: Callable[..., SshExecutor]) -> SshExecutor:
    return make_executor()


def remote_processes(cmdline: list[str]) -> list[int]:
    wanted = "\0".join(cmdline) + "\0"
    pids = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with suppress(OSError):
            if path.read_text() == wanted:
                pids.append(int(path.parent.name))
    return pids


def test_runs_argv_and_keeps_exit_code_stderr_and_duration(executor: SshExecutor) -> None:
    nodes: NodeExecutor = executor  # the engine's protocol
    res = nodes.run("n1", ["id", "-u"], 5)
    assert (res.node, res.argv, res.exit_code, res.stdout, res.stderr) == (
        "n1",
        ("id", "-u"),
        0,
        "0\n",
        "",
    )
    assert res.ok
    assert res.duration_s > 0
    assert not res.truncated

    res = executor.run("n2", ["sh", "-c", "echo out; echo err >&2; exit 3"], 5)
    assert (res.exit_code, res.stdout, res.stderr, res.ok) == (3, "out\n", "err\n", False)


def test_argv_words_reach_the_node_literally(executor: SshExecutor, lab: Lab) -> None:
    assert executor.run("n1", ["printf", "%s", "a b;c"], 5).stdout == "a b;c"
    res = executor.run("n1", ["echo", "$(id)", ";", "rm", "-rf", "/nonexistent"], 5)
    assert res.stdout == "$(id) ; rm -rf /nonexistent\n"
    marker = lab.root / "injected"
    res = executor.run("n2", ["echo", f"x; touch {marker}", f"`touch {marker}`"], 5)
    assert res.stdout == f"x; touch {marker} `touch {marker}`\n"
    assert not marker.exists()
    res = executor.run("n3", ["printf", "%s|", "", "tab\there", "new\nline", "'q'", "é"], 5)
    assert res.stdout == "|tab\there|new\nline|'q'|é|"


def test_sudo_prefixes_the_quoted_argv(make_executor: Callable[..., SshExecutor]) -> None:
    assert remote_command_line(["echo", "$(id)"], sudo=True) == "sudo -n -- echo '$(id)'"
    executor = make_executor()
    res = executor.run("n1", ["printf", "%s", "a b"], 5, sudo=True)
    assert (res.exit_code, res.stdout, res.stderr) == (0, "a b", "sudo:-n -- printf %s a b\n")
    assert executor.run("n1", ["true"], 5).stderr == ""
    by_default = make_executor(sudo=True)
    assert by_default.run("n1", ["true"], 5).stderr == "sudo:-n -- true\n"
    assert by_default.run("n1", ["true"], 5, sudo=False).stderr == ""


def test_output_is_capped_but_drained_to_the_exit_code(
    make_executor: Callable[..., SshExecutor],
) -> None:
    executor = make_executor(output_cap_bytes=1000)
    big = "head -c 5000000 /dev/zero | tr '\\0' a; head -c 3000 /dev/zero | tr '\\0' b >&2; exit 4"
    res = executor.run("n1", ["sh", "-c", big], 10)
    assert res.stdout == "a" * 1000
    assert res.stderr == "b" * 1000
    assert res.truncated
    assert res.exit_code == 4  # the command ran to its end: nothing blocked on a full window
    small = executor.run("n1", ["printf", "%s", "x" * 1000], 5)
    assert (small.stdout, small.truncated) == ("x" * 1000, False)


def test_invalid_utf8_is_replaced(executor: SshExecutor) -> None:
    res = executor.run("n1", ["printf", "ok\\377\\n"], 5)
    assert res.stdout == "ok\ufffd\n"


def test_timeout_raises_by_the_deadline_and_keeps_partial_output(
    executor: SshExecutor, lab: Lab
) -> None:
    executor.run("n1", ["true"], 5)  # connect first: this test is about the command's deadline
    started = time.monotonic()
    try:
        with pytest.raises(CommandTimeout) as caught:
            executor.run("n1", ["sh", "-c", "echo partial; exec sleep 31.7"], timeout=1)
        elapsed = time.monotonic() - started
    finally:
        # A command without a terminal is abandoned, not killed (see bot.executors.ssh).
        for pid in remote_processes(["sleep", "31.7"]):
            os.kill(pid, signal.SIGKILL)
    assert 0.9 < elapsed < 2.5
    err = caught.value
    assert (err.node, err.address) == ("n1", f"127.0.0.1:{lab.sshds['n1'].port}")
    assert f"node n1 ({err.address})" in str(err)
    assert err.stdout == "partial\n"
    # The suspect connection was replaced; the node still answers.
    assert executor.run("n1", ["echo", "still here"], 5).stdout == "still here\n"
    assert executor.connections_opened == 2


def test_node_freezing_mid_command_still_returns_by_the_deadline(
    executor: SshExecutor, lab: Lab
) -> None:
    executor.run("n3", ["true"], 5)
    command = ["sh", "-c", "echo started; exec sleep 31.8"]
    n3, pids = lab.sshds["n3"], []
    freezer = threading.Timer(0.3, lambda: pids.extend(signal_tree(n3.proc.pid, signal.SIGSTOP)))
    started = time.monotonic()
    freezer.start()
    try:
        with pytest.raises(CommandTimeout) as caught:
            executor.run("n3", command, timeout=1.5)
        elapsed = time.monotonic() - started
    finally:
        freezer.join()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for pid in remote_processes(["sleep", "31.8"]):
            os.kill(pid, signal.SIGKILL)
    assert elapsed < 1.5 + 1
    assert caught.value.stdout == "started\n"


def test_one_connection_per_node_is_reused(executor: SshExecutor) -> None:
    first = executor.run("n1", ["printenv", "SSH_CLIENT"], 5).stdout
    second = executor.run("n1", ["printenv", "SSH_CLIENT"], 5).stdout
    assert first == second  # same client port: the same TCP connection
    assert executor.connections_opened == 1
    executor.run("n2", ["true"], 5)
    assert executor.connections_opened == 2


def test_a_broken_connection_is_replaced(executor: SshExecutor, lab: Lab) -> None:
    before = executor.run("n3", ["printenv", "SSH_CLIENT"], 5).stdout
    for pid in descendants(lab.sshds["n3"].proc.pid):  # the session's sshd: connection dies
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    after = executor.run("n3", ["printenv", "SSH_CLIENT"], 5).stdout
    assert after != before
    assert executor.connections_opened == 2


def test_unknown_host_key_is_refused_and_nothing_runs(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    empty = lab.root / "empty_known_hosts"
    empty.write_text("")
    marker = lab.root / "ran-with-unknown-key"
    port = lab.sshds["n1"].port
    for known_hosts, note in ((empty, ""), (lab.root / "absent", "does not exist")):
        executor = make_executor(known_hosts=known_hosts)
        with pytest.raises(HostKeyUnknown) as caught:
            executor.run("n1", ["touch", str(marker)], 5)
        message = str(caught.value)
        assert f"ssh-keyscan -p {port} 127.0.0.1 | sed 's/^[^ ]*/n1/' >> {known_hosts}" in message
        assert "no key under `n1`" in message
        assert f"n1 at 127.0.0.1:{port}" in message
        assert lab.sshds["n1"].host_key.fingerprint in message
        assert note in message
        assert executor.connections_opened == 0
    assert not marker.exists()


def test_changed_host_key_is_refused_with_both_fingerprints(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    n1, n2 = lab.sshds["n1"], lab.sshds["n2"]
    wrong = lab.root / "changed_known_hosts"
    key = n2.host_key
    wrong.write_text(f"n1 {key.get_name()} {key.get_base64()}\n")
    marker = lab.root / "ran-with-changed-key"
    with pytest.raises(HostKeyChanged) as caught:
        make_executor(known_hosts=wrong).run("n1", ["touch", str(marker)], 5)
    message = str(caught.value)
    # Fingerprints as OpenSSH prints them.
    for pub in (n1.host_key_pub, n2.host_key_pub):
        printed = subprocess.run(
            ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
        ).stdout.split()[1]
        assert printed.startswith("SHA256:")
        assert printed in message
    assert f"n1 at 127.0.0.1:{n1.port}" in message
    assert (caught.value.node, caught.value.address) == ("n1", f"127.0.0.1:{n1.port}")
    assert not marker.exists()


def test_wrong_user_key_fails_authentication(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    other = lab.root / "other_id"
    if not other.exists():
        keygen(other, "not-authorized")
    with pytest.raises(AuthenticationFailed, match=r"n1 \(127\.0\.0\.1:\d+\) refused login"):
        make_executor(private_key=other).run("n1", ["true"], 5)


def test_run_many_answers_around_a_frozen_node(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    executor = make_executor()
    with frozen(lab.sshds["n2"]):
        started = time.monotonic()
        results = executor.run_many((NODES, ["id", "-u"]), timeout=2)
        elapsed = time.monotonic() - started
    assert elapsed < 2 + 2
    assert list(results) == list(NODES)
    for node in ("n1", "n3"):
        answer = results[node]
        assert isinstance(answer, list)
        assert [r.stdout for r in answer] == ["0\n"]
    assert isinstance(results["n2"], NodeUnreachable)
    assert "n2" in str(results["n2"])


def test_run_each_gives_each_node_as_it_answers(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    """diagnose reduces each node's outputs as they come: the answering nodes are given before
    the frozen one's error, every node once."""
    executor = make_executor()
    with frozen(lab.sshds["n2"]):
        seen = list(executor.run_each((NODES, ["id", "-u"]), timeout=2))
    assert sorted(node for node, _ in seen) == sorted(NODES)
    assert seen[-1][0] == "n2" and isinstance(seen[-1][1], NodeUnreachable)
    for _, answer in seen[:-1]:
        assert isinstance(answer, list)
        assert [r.stdout for r in answer] == ["0\n"]


def test_run_many_over_open_connections_when_one_node_freezes(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    executor = make_executor()
    warm = executor.run_many((NODES, ["true"]), timeout=5)
    assert all(isinstance(v, list) for v in warm.values())
    commands = {n: [["hostname"], ["printf", "%s", n]] for n in NODES}
    with frozen(lab.sshds["n2"]):
        started = time.monotonic()
        results = executor.run_many(commands, timeout=2)
        elapsed = time.monotonic() - started
    assert elapsed < 2 + 2
    for node in ("n1", "n3"):
        answer = results[node]
        assert isinstance(answer, list)
        assert [r.stdout for r in answer][1] == node
    assert isinstance(results["n2"], CommandTimeout)
    assert executor.connections_opened == 3
    # After it thaws, the node gets a new connection.
    again = executor.run_many(commands, timeout=5)
    assert all(isinstance(v, list) for v in again.values())
    assert executor.connections_opened == 4


def test_unresolvable_and_unreachable_nodes(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    dead_port = free_port()
    executor = make_executor(
        hosts={"n1": f"127.0.0.1:{lab.sshds['n1'].port}", "dead": f"127.0.0.1:{dead_port}"}
    )
    with pytest.raises(NodeUnresolved, match="no address for node ghost"):
        executor.run("ghost", ["true"], 5)
    with pytest.raises(NodeUnreachable, match=f"node dead at 127.0.0.1:{dead_port}"):
        executor.run("dead", ["true"], 5)
    results = executor.run_many((["n1", "ghost", "dead"], ["true"]), timeout=5)
    assert isinstance(results["n1"], list)
    assert isinstance(results["ghost"], NodeUnresolved)
    assert isinstance(results["dead"], NodeUnreachable)

    def resolver(node: str) -> str:
        raise ExecutorError(f"node {node} is not in the cluster")

    with pytest.raises(NodeUnresolved, match="not in the cluster"):
        make_executor(resolve=resolver).run("ghost", ["true"], 5)


def test_every_failure_is_told_to_on_error_by_kind(lab: Lab) -> None:
    dead_port = free_port()
    hosts = {"n1": f"127.0.0.1:{lab.sshds['n1'].port}", "dead": f"127.0.0.1:{dead_port}"}
    kinds: list[str] = []
    with SshExecutor(lab.settings(hosts=hosts), on_error=kinds.append) as executor:
        with pytest.raises(NodeUnresolved):
            executor.run("ghost", ["true"], 5)
        assert executor.run("n1", ["false"], 5).exit_code == 1  # a result, not a failure
        executor.run_many((["n1", "ghost", "dead"], ["true"]), timeout=5)
    assert kinds == ["NodeUnresolved", "NodeUnresolved", "NodeUnreachable"]


def test_wiring_counts_ssh_failures_for_metrics(lab: Lab) -> None:
    def count(kind: str) -> float:
        return METRICS.value("flannel_bot_ssh_errors_total", cluster="edge", kind=kind)

    before = count("NodeUnresolved")
    on_error = functools.partial(count_ssh_error, cluster="edge")
    with (
        SshExecutor(lab.settings(hosts={}), on_error=on_error) as executor,
        pytest.raises(NodeUnresolved),
    ):
        executor.run("ghost", ["true"], 5)
    assert count("NodeUnresolved") == before + 1
    help_line = "# HELP flannel_bot_ssh_errors_total SSH failures by kind (unreachable, host key, "
    assert help_line + "auth, timeout)" in METRICS.render()


def test_addresses_from_ssh_config_and_resolver(
    make_executor: Callable[..., SshExecutor], lab: Lab
) -> None:
    config = lab.root / "ssh_config"
    config.write_text(
        "Host cfg-node\n"
        "  HostName 127.0.0.1\n"
        f"  Port {lab.sshds['n3'].port}\n"
        "  User root\n"
        f"  IdentityFile {lab.user_key}\n"
        "  HostKeyAlias n3\n"  # its key is looked up under n3, as OpenSSH would
    )
    from_config = make_executor(ssh_config=config, private_key=None, hosts={})
    assert from_config.run("cfg-node", ["id", "-u"], 5).stdout == "0\n"

    resolved: list[str] = []

    def internal_ip(node: str) -> str:
        resolved.append(node)
        return "127.0.0.1"

    by_resolver = make_executor(resolve=internal_ip, port=lab.sshds["n2"].port, hosts={})
    assert by_resolver.run("n2", ["id", "-u"], 5).stdout == "0\n"
    assert by_resolver.run("n2", ["id", "-u"], 5).ok
    assert resolved == ["n2"]  # resolved once per connection


def test_bad_arguments_are_refused_before_connecting(executor: SshExecutor) -> None:
    with pytest.raises(TypeError, match="not the string"):
        executor.run("n1", "id -u", 5)
    with pytest.raises(TypeError, match="list of argv lists"):
        executor.run_many({"n1": ["id", "-u"]}, 5)
    with pytest.raises(ValueError, match="port"):
        SshSettings(hosts={"n1": "127.0.0.1:99999"})
    assert executor.connections_opened == 0


def test_close_closes_connections(lab: Lab) -> None:
    with SshExecutor(lab.settings()) as executor:
        assert executor.run("n1", ["true"], 5).ok
    with pytest.raises(ExecutorError, match="closed"):
        executor.run("n1", ["true"], 5)


@pytest.fixture(scope="module")
def pair(lab: Lab) -> Iterator[dict[str, Sshd]]:
    """Nodes na and nb: two sshds on one port at two addresses, as two machines would be."""
    port = free_port()
    made: dict[str, Sshd] = {}
    try:
        for node, address in (("na", "127.0.0.2"), ("nb", "127.0.0.3")):
            made[node] = start_sshd(
                lab.root,
                node,
                lab.root / "authorized_keys",
                lab.root / "home",
                lab.root / "bin",
                address=address,
                port=port,
            )
        for sshd in made.values():
            wait_for_banner(sshd, lab.root)
        yield made
    finally:
        for sshd in made.values():
            stop_sshd(sshd)


def test_a_node_address_pointed_at_another_node_is_refused(
    make_executor: Callable[..., SshExecutor], lab: Lab, pair: dict[str, Sshd]
) -> None:
    """Whoever may patch a Node's status can change the address the bot reaches it at; the key
    is looked up under the node's name, so na's name never accepts nb's key."""
    na, nb = pair["na"], pair["nb"]
    known_hosts = lab.root / "pair_known_hosts"
    # a file on its way from address entries (plain ssh-keyscan) to name entries: both present
    known_hosts.write_text(
        na.known_hosts_line("na")
        + nb.known_hosts_line("nb")
        + na.known_hosts_line(na.address_name)
        + nb.known_hosts_line(nb.address_name)
    )
    honest = {"na": na.address, "nb": nb.address}
    executor = make_executor(
        resolve=honest.__getitem__, hosts={}, port=na.port, known_hosts=known_hosts
    )
    assert executor.run("na", ["printenv", "SSH_CONNECTION"], 5).stdout.split()[2] == na.address

    patched = {"na": nb.address, "nb": nb.address}  # na's Node status now gives nb's address
    marker = lab.root / "ran-on-nb-as-na"
    for by_address in (False, True):  # an entry under the name wins even with the fallback on
        executor = make_executor(
            resolve=patched.__getitem__,
            hosts={},
            port=na.port,
            known_hosts=known_hosts,
            known_hosts_by_address=by_address,
        )
        with pytest.raises(HostKeyChanged) as caught:
            executor.run("na", ["touch", str(marker)], 5)
        message = str(caught.value)
        assert f"node na at {nb.address}:{nb.port}" in message
        assert "under `na`" in message and nb.host_key.fingerprint in message
        assert executor.connections_opened == 0
    assert not marker.exists()


def test_an_entry_only_under_the_address_is_refused_unless_configured(
    make_executor: Callable[..., SshExecutor], lab: Lab, pair: dict[str, Sshd]
) -> None:
    na, nb = pair["na"], pair["nb"]
    known_hosts = lab.root / "address_known_hosts"
    known_hosts.write_text(na.known_hosts_line(na.address_name))
    honest = {"na": na.address, "nb": nb.address}
    settings = {"resolve": honest.__getitem__, "hosts": {}, "port": na.port}
    with pytest.raises(HostKeyUnknown) as caught:
        make_executor(known_hosts=known_hosts, **settings).run("na", ["true"], 5)
    message = str(caught.value)
    assert f"it has one under the address `{na.address_name}`" in message
    assert "known_hosts_by_address = true" in message
    assert f"sed 's/^[^ ]*/na/' >> {known_hosts}" in message
    compatible = make_executor(known_hosts=known_hosts, known_hosts_by_address=True, **settings)
    assert compatible.run("na", ["true"], 5).ok


def test_marker_lines_in_known_hosts(make_executor: Callable[..., SshExecutor], lab: Lab) -> None:
    """@cert-authority is skipped (paramiko cannot check certificates), @revoked is refused."""
    n2 = lab.sshds["n2"]
    ca = paramiko.PKey.from_path(keygen(lab.root / "markers_ca", "ca"))
    ca_line = f"@cert-authority *.example.com,n1 {ca.get_name()} {ca.get_base64()}\n"
    known_hosts = lab.root / "marker_known_hosts"
    known_hosts.write_text(
        "# markers as OpenSSH writes them\n"
        + ca_line
        + lab.known_hosts.read_text()
        + "@revoked * "
        + n2.known_hosts_line("").lstrip()  # n2's key, for every host
    )
    executor = make_executor(known_hosts=known_hosts)
    assert executor.run("n1", ["true"], 5).ok
    marker = lab.root / "ran-with-revoked-key"
    with pytest.raises(HostKeyRevoked) as caught:
        executor.run("n2", ["touch", str(marker)], 5)
    message = str(caught.value)
    assert (
        "marked @revoked" in message
        and f"line {len(known_hosts.read_text().splitlines())}" in message
    )
    assert n2.host_key.fingerprint in message
    # diagnose's fan-out answers for every node instead of crashing on the file
    results = executor.run_many((NODES, ["true"]), timeout=5)
    assert isinstance(results["n1"], list) and isinstance(results["n3"], list)
    assert isinstance(results["n2"], HostKeyRevoked)
    assert not marker.exists()
