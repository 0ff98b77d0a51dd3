"""The request handler: Kubernetes REST paths onto the store, `Status` bodies, chunked watches.

Built on `http.server`, so the stand-in needs only the standard library: each request gets its
own thread, and a watch keeps its connection until its timeout, the client leaving, or the server
stopping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from flannel_bot.lab.apiserver.authorization import RequestAttributes
from flannel_bot.lab.apiserver.errors import StatusError
from flannel_bot.lab.apiserver.resources import Obj, Resource
from flannel_bot.lab.apiserver.selectors import matcher, parse_selectors, translate
from flannel_bot.lab.apiserver.store import DeleteOptions, WatchEvent

if TYPE_CHECKING:
    from flannel_bot.lab.apiserver.server import ApiServer

_log = logging.getLogger(__name__)

WATCH_TIMEOUT_DEFAULT = 1800.0  # the real server's --min-request-timeout


def parse_bool(value: str | None, param: str) -> bool:
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise StatusError.bad_request(
        f'invalid value for {param}: strconv.ParseBool: parsing "{value}"'
    )


def parse_int(value: str | None, param: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise StatusError.bad_request(
            f'invalid value for {param}: strconv.ParseInt: parsing "{value}": invalid syntax'
        ) from None


def list_item(obj: Obj) -> Obj:
    """List items omit kind and apiVersion on the wire; only the list carries them."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


@dataclass
class _Route:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: ApiServer) -> None:
        self.api = api
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a watch event must not wait for the client's delayed ACK
    server: HttpServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # plumbing

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise StatusError.bad_request(
                f"couldn't get version/kind; json parse error: {exc}"
            ) from None

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(body)

    def _send_fault(self, code: int, retry_after: int | None) -> None:
        reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
        error = StatusError(code, reason.get(code, "InternalError"), f"injected fault {code}")
        body = json.dumps(error.status, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            raw = self._body()
            fault = self.api.take_fault(method, url.path)
            if fault is not None:
                self._send_fault(*fault)
                return
            self._serve(method, url.path, query, raw)
        except StatusError as exc:
            self._send_json(exc.code, exc.status)
        except _ClientGone:
            self.close_connection = True
        except Exception as exc:  # a bug in the lab: answer like the real server, log loudly
            _log.exception("lab API server failed on %s %s", method, self.path)
            error = StatusError(500, "InternalError", f"Internal error occurred: {exc}")
            try:
                self._send_json(500, error.status)
            except OSError:
                self.close_connection = True

    def _serve(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        segments = [unquote(s) for s in path.split("/") if s]
        health = segments in (["healthz"], ["livez"], ["readyz"])
        discovery = (
            segments == ["version"]
            or (segments[:1] == ["api"] and len(segments) <= 2)
            or (segments[:1] == ["apis"] and len(segments) <= 3)
        )
        if health or discovery:
            if method != "GET":
                raise StatusError.method_not_allowed()
            if health:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            else:
                self._send_json(200, self.api.discovery(segments))
            return
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif segments[:1] == ["apis"] and len(segments) > 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise StatusError.no_route()
        route = self._route(group, version, rest)
        if route.subresource is None and route.name is None:
            self._collection(method, route, query, raw)
        elif route.subresource is None:
            self._object(method, route, query, raw)
        else:
            self._subresource(method, route, query, raw)

    def _route(self, group: str, version: str, rest: list[str]) -> _Route:
        table = self.api.resources
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        if not rest:
            raise StatusError.no_route()
        nested = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            nested = table.at(group, version, rest[2])
            if nested is not None and not nested.namespaced:
                nested = None
            if (nested is None and group) or len(rest) > 5:
                raise StatusError.no_route()
        if nested is not None:
            res, namespace = nested, rest[1]
            name = rest[3] if len(rest) > 3 else None
            sub = rest[4] if len(rest) > 4 else None
        else:
            found = table.at(group, version, rest[0])
            if found is None or len(rest) > 3 or (found.namespaced and len(rest) > 1):
                raise StatusError.no_route()
            res, namespace = found, None
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise StatusError.no_route()
        return _Route(res, namespace, name, sub, watch_path)

    def _authorize(self, verb: str, route: _Route) -> None:
        if verb not in route.res.verbs:
            raise StatusError.method_not_allowed()
        attrs = RequestAttributes(
            verb=verb,
            group=route.res.group,
            resource=route.res.plural,
            subresource=route.subresource or "",
            namespace=route.namespace,
            name=route.name,
        )
        self.api.authorizer.check(self._token(), attrs)

    # collections and objects

    def _collection(self, method: str, route: _Route, query: dict[str, str], raw: bytes) -> None:
        res = route.res
        if method == "GET":
            watch = route.watch_path or parse_bool(query.get("watch"), "watch")
            self._authorize("watch" if watch else "list", route)
            labels, fields = parse_selectors(res, query)
            match = matcher(res, route.namespace, labels, fields)
            if watch:
                self._watch(route, match, query)
            else:
                self._send_json(200, self.api.list_response(res, route.namespace, match, query))
        elif method == "POST":
            if res.namespaced and route.namespace is None:
                raise StatusError.method_not_allowed()
            review = res.plural == "selfsubjectaccessreviews"
            if not review:  # every user may ask what they may do (system:basic-user)
                self._authorize("create", route)
            body = self._json_body(raw)
            if not isinstance(body, dict):
                raise StatusError.bad_request("the body of a create must be a JSON object")
            if review:
                self._send_json(201, self.api.review(self._token(), body))
                return
            dry_run = query.get("dryRun") == "All"
            obj = self.api.apply_create(res, route.namespace, body, dry_run=dry_run)
            self._send_json(201, obj)
        elif method == "DELETE":
            self._authorize("deletecollection", route)
            labels, fields = parse_selectors(res, query)
            match = matcher(res, route.namespace, labels, fields)
            deleted = self.api.delete_matching(res, route.namespace, match)
            self._send_json(
                200,
                {
                    "kind": f"{res.kind}List",
                    "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(self.api.resource_version)},
                    "items": [list_item(o) for o in deleted],
                },
            )
        else:
            raise StatusError.method_not_allowed()

    def _object(self, method: str, route: _Route, query: dict[str, str], raw: bytes) -> None:
        res, name = route.res, route.name
        assert name is not None
        dry_run = query.get("dryRun") == "All"
        if method == "GET" and route.watch_path:
            self._authorize("watch", route)
            labels, fields = parse_selectors(res, query)
            by_name = matcher(res, route.namespace, labels, fields)
            self._watch(route, lambda o: o["metadata"]["name"] == name and by_name(o), query)
        elif method == "GET":
            self._authorize("get", route)
            self._send_json(200, self.api._store.get(res, route.namespace, name))
        elif method == "PUT":
            self._authorize("update", route)
            body = self._json_body(raw)
            obj = self.api.apply_update(res, route.namespace, name, body, None, dry_run)
            self._send_json(200, obj)
        elif method == "PATCH":
            self._authorize("patch", route)
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            body = self._json_body(raw)
            obj = self.api.apply_patch(
                res, route.namespace, name, content_type, body, None, dry_run
            )
            self._send_json(200, obj)
        elif method == "DELETE":
            self._authorize("delete", route)
            options = self._delete_options(raw, query)
            obj, removed = self.api.apply_delete(res, route.namespace, name, options)
            if not removed:
                self._send_json(202 if not options.dry_run else 200, obj)
            elif res.returns_object:
                self._send_json(200, obj)
            else:
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": res.details(name, uid=obj["metadata"]["uid"]),
                }
                self._send_json(200, status)
        else:
            raise StatusError.method_not_allowed()

    def _delete_options(self, raw: bytes, query: Mapping[str, str]) -> DeleteOptions:
        body = self._json_body(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise StatusError.bad_request("DeleteOptions must be a JSON object")
        pre = body.get("preconditions") or {}
        dry_run = query.get("dryRun") == "All" or "All" in (body.get("dryRun") or [])
        return DeleteOptions(pre.get("uid"), pre.get("resourceVersion"), dry_run)

    def _subresource(self, method: str, route: _Route, query: dict[str, str], raw: bytes) -> None:
        res, name, sub = route.res, route.name, route.subresource
        assert name is not None and sub is not None
        dry_run = query.get("dryRun") == "All"
        if sub == "log":
            if method != "GET":
                raise StatusError.method_not_allowed()
            self._authorize("get", route)
            assert route.namespace is not None
            text = self.api.pod_log(route.namespace, name, query)
            self._send(200, text.encode(), "text/plain")
        elif method == "GET":
            self._authorize("get", route)
            self._send_json(200, self.api._store.get(res, route.namespace, name))
        elif method == "PUT":
            self._authorize("update", route)
            body = self._json_body(raw)
            obj = self.api.apply_update(res, route.namespace, name, body, sub, dry_run)
            self._send_json(200, obj)
        elif method == "PATCH":
            self._authorize("patch", route)
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            body = self._json_body(raw)
            obj = self.api.apply_patch(res, route.namespace, name, content_type, body, sub, dry_run)
            self._send_json(200, obj)
        else:
            raise StatusError.method_not_allowed()

    # watch

    def _watch(self, route: _Route, match: Callable[[Obj], bool], query: dict[str, str]) -> None:
        store = self.api._store
        timeout = parse_int(query.get("timeoutSeconds"), "timeoutSeconds")
        deadline = time.monotonic() + (
            timeout if timeout and timeout > 0 else WATCH_TIMEOUT_DEFAULT
        )
        rv_param = query.get("resourceVersion") or "0"
        initial: list[WatchEvent] = []
        with store.cond:
            if rv_param == "0":
                cursor = store.rv
                items, _ = store.select(route.res, route.namespace, match)
                initial = [WatchEvent(cursor, "ADDED", route.res, obj) for obj in items]
            else:
                parsed = parse_int(rv_param, "resourceVersion")
                assert parsed is not None
                cursor = parsed
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            for ev in initial:
                self._event("ADDED", ev.obj)
            while not self.server.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events, oldest = store.wait_after(cursor, min(remaining, 1.0), self.server.stopping)
                if events is None:
                    expired = StatusError(
                        410, "Expired", f"too old resource version: {cursor} ({oldest})"
                    )
                    self._event("ERROR", expired.status)
                    break
                for ev in events:
                    seen = translate(ev, route.res, match)
                    if seen is not None:
                        self._event(*seen)
                    cursor = ev.rv
                if not events and self._client_gone():
                    raise _ClientGone
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            raise _ClientGone from None

    def _event(self, event_type: str, obj: Obj) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode()
        line += b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True
