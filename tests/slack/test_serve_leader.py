"""Two `flannel-bot serve` processes, one Lease: one answers Slack, the other waits.

Real processes against the lab API server (which stores the Lease) and the local Slack stand-in:
the standby answers /healthz but not Slack, and /readyz tells a Service to route to the leader
only; a SIGKILLed leader is replaced once its Lease expires, never before; a leader stopped with
SIGTERM (a rolling update) gives the Lease up, so the next standby takes over at once.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flannel_bot.lab.apiserver import ApiServer
from tests.slack.conftest import CONFIG, EXAMPLE_CLUSTER, SECRET
from tests.slack.fake_slack import PROXY_ENV_VARS, FakeSlack
from tests.slack.signing import sign, slash_command_body

FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")
DURATION = 6  # seconds a Lease lives without renewal


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    base: str = ""

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with `prefix`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"{self.name} did not print {prefix!r} within {timeout} s")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def slash(self, text: str) -> int:
        body = slash_command_body(text, user_id="UALICE")
        req = urllib.request.Request(
            self.base + "/slack/events", data=body, headers=sign(SECRET, body), method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@dataclass
class Replicas:
    api: ApiServer
    env: dict[str, str]
    started: list[Replica] = field(default_factory=list)

    def launch(self, name: str) -> Replica:
        """`flannel-bot serve` as the pod `name`, once it serves /healthz (leading or not)."""
        proc = subprocess.Popen(
            [FLANNEL_BOT, "serve"],
            env=self.env | {"POD_NAME": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        replica = Replica(name, proc)
        self.started.append(replica)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                replica.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        replica.base = replica.wait_for("serving ", 30).split()[-1]
        return replica

    def holder(self) -> str:
        lease = self.api.get("leases", "flannel-bot", "flannel-bot")
        return str(lease["spec"].get("holderIdentity") or "")


@pytest.fixture
def replicas(slack: FakeSlack, tmp_path: Path) -> Iterator[Replicas]:
    api = ApiServer().start()
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flannel-bot"}})
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    config = tmp_path / "flannel-bot.toml"
    config.write_text(
        CONFIG.replace(f'recording = "{EXAMPLE_CLUSTER}"', f'kubeconfig = "{kubeconfig}"')
        + f'\n[leader]\nlease = "flannel-bot/flannel-bot"\nduration_seconds = {DURATION}\n'
        "renew_deadline_seconds = 4\nretry_seconds = 0.5\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_VARS and "SLACK" not in k}
    env |= {
        "FLANNEL_BOT_CONFIG": str(config),
        "FLANNEL_BOT_DB": str(tmp_path / "bot.db"),  # one volume: the replicas share the file
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.base_url,
    }
    running = Replicas(api, env)
    try:
        yield running
    finally:
        for r in running.started:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait()
        api.stop()


def test_one_replica_serves_a_killed_leader_is_replaced_after_expiry_a_stopped_one_at_once(
    replicas: Replicas, slack: FakeSlack
) -> None:
    a = replicas.launch("replica-a")
    a.wait_for("leading as replica-a", 15)
    b = replicas.launch("replica-b")
    assert a.get("/healthz") == (200, "ok serving\n") and a.get("/readyz")[0] == 200
    assert b.get("/healthz") == (200, "ok standby\n") and b.get("/readyz") == (503, "standby\n")
    # Slack reaches the leader; the standby does not answer it
    assert a.slash("help") == 200
    slack.wait_for("chat.postMessage", 2, timeout=15)
    assert b.slash("help") == 404
    time.sleep(1)
    assert len(slack.calls("chat.postMessage")) == 2
    assert replicas.holder() == "replica-a"

    # a crash: the Lease is not given up, so the standby waits for it to expire
    a.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    b.wait_for("leading as replica-b", DURATION + 10)
    waited = time.monotonic() - killed
    assert waited >= DURATION - 1, f"took over after {waited:.1f} s, before the Lease expired"
    assert replicas.holder() == "replica-b"
    assert b.get("/readyz")[0] == 200
    assert b.slash("help") == 200
    slack.wait_for("chat.postMessage", 4, timeout=15)

    # a rolling update: SIGTERM, and the leader gives the Lease up as it exits
    c = replicas.launch("replica-c")
    assert c.get("/healthz") == (200, "ok standby\n")
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=15) == 0
    stopped = time.monotonic()
    assert replicas.holder() in ("", "replica-c")  # released before the process exited
    c.wait_for("leading as replica-c", DURATION - 2)
    assert time.monotonic() - stopped < DURATION - 2
    assert c.slash("help") == 200
    slack.wait_for("chat.postMessage", 6, timeout=15)


def test_the_replacement_carries_on_the_audit_log_its_predecessor_wrote(
    replicas: Replicas, slack: FakeSlack
) -> None:
    """As shipped (one replica, Recreate, the volume moving with the pod): the pod that replaces a
    killed one opens the same SQLite file, waits out the Lease, and extends the same chain."""
    a = replicas.launch("replica-a")
    a.wait_for("leading as replica-a", 15)
    assert a.slash("help") == 200
    slack.wait_for("chat.postMessage", 2, timeout=15)
    db = replicas.env["FLANNEL_BOT_DB"]
    before = verify(replicas.env, db)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)

    b = replicas.launch("replica-b")  # the Recreated pod, the volume attached to it
    b.wait_for("leading as replica-b", DURATION + 10)
    assert b.slash("help") == 200
    slack.wait_for("chat.postMessage", 4, timeout=15)
    after = verify(replicas.env, db)
    assert after > before  # the same chain, longer: nothing the first pod wrote was lost


def verify(env: dict[str, str], db: str) -> int:
    """`flannel-bot audit verify` on the shared file: the number of events in a chain that holds."""
    out = subprocess.run(
        [FLANNEL_BOT, "audit", "verify"],
        env=env | {"FLANNEL_BOT_DB": db},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.startswith("audit chain OK"), out
    return int(out.split(":")[1].split()[0])
