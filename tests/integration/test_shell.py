"""The shell adapter: a local /flannel prompt, approved from another process as Slack would be."""

from __future__ import annotations

import os
import selectors
import subprocess
import time

import pytest

from tests.integration.conftest import BotEnv

pytestmark = pytest.mark.integration


class Prompt:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen = ""
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout, selectors.EVENT_READ)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen; got:\n{self.seen}")
            if self.sel.select(timeout=0.2):
                self.seen += self.proc.stdout.read() or ""
        return self.seen


def test_shell_runs_shows_progress_and_sees_an_approval_from_elsewhere(env: BotEnv) -> None:
    proc = env.popen(
        "shell",
        user="alice",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    prompt = Prompt(proc)
    try:
        prompt.expect("/flannel> ")
        prompt.send("/flannel run flannel.restart-pods@1.1.0 nodes=w2")
        out = prompt.expect("AWAITING_APPROVAL")
        assert "[run 1] step 1/2 [read] Show the flannel pods on the nodes" in out
        assert out.index("[run 1] step 1/2") < out.index("Run 1: flannel.restart-pods@1.1.0")
        prompt.send("approve 1")
        prompt.expect("alice requested this run and cannot approve it")
        bob = env.cli("approve", "1", user="bob", check=True)
        assert "SUCCEEDED" in bob.stdout
        out = prompt.expect("[run 1] SUCCEEDED")  # followed from the database, live
        assert "[run 1] approved by @bob (1/1)" in out
        prompt.send("run flannel.restart-pods@1.1.0 nodes='w2;reboot'")
        prompt.expect("is not a valid node name")
        prompt.send("quit")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
