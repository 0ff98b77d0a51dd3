"""Start-up time of the CLI: `flannel-bot help`, `--help` and `runbooks` beside `python -c pass`.

Commands that need no cluster should start about as fast as Python itself: the Kubernetes client,
paramiko, Bolt and waitress are imported only by the commands that use them. Each command runs
N times (default 15) in its own process, alternating with the others, from a scratch directory with
an empty HOME and no cluster (KUBECONFIG=/nonexistent), as a first-time user would; the median
wall time of each is printed in ms and as a ratio to `python -c pass`, with the exit status.

Run: `.venv/bin/python bench/startup.py [--runs 15]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def flannel_bot() -> list[str]:
    """The installed console script beside this Python, else the module."""
    script = Path(sys.executable).with_name("flannel-bot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flannel_bot.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    cli = flannel_bot()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "flannel-bot help": [*cli, "help"],
        "flannel-bot --help": [*cli, "--help"],
        "flannel-bot runbooks": [*cli, "runbooks"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    status: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        home.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLANNEL_BOT_")},
            "HOME": str(home),
            "KUBECONFIG": "/nonexistent",
        }
        env.pop("XDG_STATE_HOME", None)
        for _ in range(args.runs):  # interleaved, so a slow moment of the machine hits all
            for name, argv in cases.items():
                start = time.perf_counter()
                done = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, check=False)
                times[name].append(time.perf_counter() - start)
                status[name] = done.returncode
    base = statistics.median(times["python -c pass"])
    print(f"median of {args.runs} runs each, no config, no cluster ({' '.join(cli)})")
    print(f"{'command':<24}{'ms':>8}{'x python':>10}  exit")
    for name in cases:
        median = statistics.median(times[name])
        print(f"{name:<24}{median * 1000:>8.0f}{median / base:>10.1f}  {status[name]}")


if __name__ == "__main__":
    main()
