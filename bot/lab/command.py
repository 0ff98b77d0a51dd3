"""`flannel-bot lab up|down|status|break|restore`: the lab from the terminal (Linux, root)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flannel_bot.lab.faults import K3S_SCENARIOS, SCENARIOS, Scenario
from flannel_bot.lab.network import LabError, check_host, lab_netns, teardown
from flannel_bot.lab.topology import DISTRIBUTIONS, LabSpec

DEFAULT_ROOT = Path("/run/flannel-bot-lab")


def _listing(scenarios: dict[str, Scenario]) -> str:
    return "\n".join(
        f"  {s.name:20} {s.summary}" + (f"\n  {'':20} (lab: {s.note})" if s.note else "")
        for s in scenarios.values()
    )


def _parser() -> argparse.ArgumentParser:
    scenarios = (
        f"{_listing(SCENARIOS)}\n\non a k3s lab (`up --distribution k3s`):\n"
        f"{_listing(K3S_SCENARIOS)}"
    )
    p = argparse.ArgumentParser(
        prog="flannel-bot lab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A Flannel cluster on this machine: nodes are network namespaces running "
        "sshd with a real VXLAN data plane; a Kubernetes API on 127.0.0.1. Needs Linux and root.",
        epilog=f"scenarios for `break` / `restore`:\n{scenarios}",
    )
    p.add_argument("--name", default="lab", help="lab name, 1-4 letters/digits (default lab)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where lab files live")
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="build the lab and start its API server")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--underlay", default="172.31.254.0/24", help="a private /24")
    up.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="kubeadm",
        help="kubeadm (flannel as the kube-flannel DaemonSet, the default) or k3s (flannel "
        "and kube-proxy embedded in k3s)",
    )
    sub.add_parser("down", help="remove every namespace, process, link and file of the lab")
    sub.add_parser("status", help="nodes, addresses and cross-node pod reachability")
    for verb in ("break", "restore"):
        b = sub.add_parser(
            verb,
            help=f"{verb} a seed incident (see the list below)",
            epilog=f"scenarios:\n{scenarios}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        b.add_argument("scenario", choices=sorted({*SCENARIOS, *K3S_SCENARIOS}))
        b.add_argument("--node", default="w2")
    return p


def _state(spec: LabSpec) -> dict[str, Any]:
    try:
        return dict(json.loads((spec.dir / "state.json").read_text()))
    except (OSError, ValueError):
        raise LabError(
            f"lab `{spec.name}` is not up (no {spec.dir / 'state.json'}); run `flannel-bot lab up`"
        ) from None


def _control(spec: LabSpec, path: str, body: dict[str, str] | None = None) -> dict[str, Any]:
    url = _state(spec).get("control")
    if not url or not str(url).startswith("http://127.0.0.1:"):
        raise LabError(f"lab `{spec.name}` is still starting")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - checked above: loopback http only
        url + path,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise LabError(json.loads(exc.read()).get("error", str(exc))) from None
    except OSError as exc:
        raise LabError(
            f"the lab `{spec.name}` does not answer ({exc}); try `lab down` and `lab up`"
        ) from None


def lab_up(spec: LabSpec) -> int:
    check_host()
    log = spec.root / f"{spec.name}.log"
    spec.root.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flannel_bot.lab.daemon",
                str(spec.dir),
                str(spec.nodes),
                spec.underlay,
                spec.distribution,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not (spec.dir / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            teardown(spec)
            raise LabError(
                f"the lab did not come up; its log ({log}):\n"
                + log.read_text(errors="replace")[-2000:]
            )
        time.sleep(0.05)
    state = _state(spec)
    kind = "" if spec.distribution == "kubeadm" else f" {spec.distribution}"
    print(
        f"lab `{spec.name}` is up: {spec.nodes}{kind} nodes on {spec.underlay}, API {state['api']}"
    )
    print(f"point the bot at it:  export FLANNEL_BOT_CONFIG={state['bot_config']}")
    return 0


def lab_status(spec: LabSpec) -> int:
    status = _control(spec, "/status")
    print(f"lab `{status['name']}`  API {status['api']}  kubeconfig {status['kubeconfig']}")
    for node in status["nodes"]:
        reach = status["pod_reachability"][node["name"]]
        peers = " ".join(f"{peer}:{'ok' if ok else 'FAIL'}" for peer, ok in reach.items())
        print(
            f"  {node['name']:4} {node['address']:15} podCIDR {node['pod_cidr']:15} "
            f"sshd {'up' if node['sshd'] else 'DOWN'}  pods -> {peers}"
        )
    for scenario, nodes in status["faults"].items():
        if nodes:
            print(f"  injected with `lab break`: {scenario} on {', '.join(nodes)}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = LabSpec(
            name=args.name,
            nodes=getattr(args, "nodes", 3),
            underlay=getattr(args, "underlay", "172.31.254.0/24"),
            root=args.root,
            distribution=getattr(args, "distribution", "kubeadm"),
        )
    except ValueError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "up":
            return lab_up(spec)
        if args.action == "down":
            teardown(spec)
            left = lab_netns(spec)
            print(f"lab `{spec.name}` is down" + (f"; left behind: {left}" if left else ""))
            return 1 if left else 0
        if args.action == "status":
            return lab_status(spec)
        result = _control(spec, f"/{args.action}", {"scenario": args.scenario, "node": args.node})
        where = "the cluster" if result["cluster_wide"] else args.node
        verb = "broke" if args.action == "break" else "restored"
        print(f"{verb} {result['scenario']} on {where}: {result['summary']}")
        if result["note"]:
            print(f"  (lab: {result['note']})")
        return 0
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
