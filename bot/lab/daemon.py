"""The lab's long-running process: `flannel-bot lab up` starts it and returns.

It builds the lab, serves the lab's Kubernetes API, plays the controllers, and takes `break`,
`restore` and `status` requests on a small control endpoint on 127.0.0.1 (port in `state.json`).
`lab down` stops it and removes everything (its command line carries the lab directory).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flannel_bot.lab import faults
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.topology import LabSpec


class _Control(BaseHTTPRequestHandler):
    lab: Lab

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/status":
            self._reply(200, self.lab.status())
        else:
            self._reply(404, {"error": f"no {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            scenario, node = str(body["scenario"]), str(body["node"])
            faults.scenario_for(self.lab, scenario)
            self.lab.spec.by_name(node)
        except (ValueError, KeyError) as exc:
            self._reply(400, {"error": f"bad request: {exc}"})
            return
        action = faults.inject if self.path == "/break" else faults.undo
        try:
            s = action(self.lab, scenario, node)
        except Exception as exc:
            self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._reply(
            200,
            {
                "scenario": s.name,
                "node": node,
                "summary": s.summary,
                "note": s.note,
                "cluster_wide": s.cluster_wide,
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(spec: LabSpec) -> None:
    lab = Lab(spec).up()
    handler = type("Control", (_Control,), {"lab": lab})
    control = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state_path = spec.dir / "state.json"
    state = json.loads(state_path.read_text())
    state["control"] = f"http://127.0.0.1:{control.server_address[1]}"
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        threading.Thread(target=control.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    (spec.dir / "ready").write_text("ok\n")
    control.serve_forever(poll_interval=0.2)
    lab.api.stop()


def main(argv: list[str]) -> None:
    """argv: LAB_DIR NODES UNDERLAY [DISTRIBUTION] (the lab directory names the lab:
    ROOT/NAME)."""
    lab_dir, nodes, underlay = Path(argv[0]), int(argv[1]), argv[2]
    distribution = argv[3] if len(argv) > 3 else "kubeadm"
    serve(
        LabSpec(
            name=lab_dir.name,
            nodes=nodes,
            underlay=underlay,
            root=lab_dir.parent,
            distribution=distribution,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
