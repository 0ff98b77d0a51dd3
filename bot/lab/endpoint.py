"""The `kubernetes` Service's endpoint inside the lab's service namespace.

Nodes reach 10.96.0.1:443 only through kube-proxy's DNAT to this listener, so a TCP connect from a
node tells, as on a real node, whether the API service works there. It answers every request the
way kube-apiserver answers an anonymous one.
Run: `python -m flannel_bot.lab.endpoint ADDRESS PORT LABDIR`
(the lab directory in the command line is how `lab down` finds the process).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORBIDDEN = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": 'forbidden: User "system:anonymous" cannot get path "/"',
    "reason": "Forbidden",
    "details": {},
    "code": 403,
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(FORBIDDEN).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> None:
    address, port = argv[0], int(argv[1])
    ThreadingHTTPServer((address, port), _Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
