"""The HTTP service: /metrics, /v1/events, /v1/alertmanager, /v1/agents, health.

    GET  /                  landing page
    GET  /metrics           text 0.0.4, or OpenMetrics when Accept asks; gzip when accepted
    POST /v1/events         JSON object, JSON array or NDJSON, optionally gzip-encoded
    POST /v1/alertmanager   Alertmanager webhook feeding self-healing
    GET  /v1/agents         per-agent health as JSON
    GET  /-/healthy         liveness; GET /-/ready: readiness (503 while shutting down)

The server is the standard library's threading HTTP server speaking HTTP/1.1
with keep-alive: ingest cost is dominated by decoding and aggregation
(msgspec and the store), not by the HTTP layer, once batches are a few hundred
events (see bench/bench_ingest.py).  Batches are decoded and applied one at a
time (Service.ingest_lock): concurrent connections contending for the GIL
instead cost about a third of the throughput.

Bodies are bounded: a declared Content-Length over `max_body_bytes` is refused
with 413 before anything is read, a chunked body is cut when it passes the
limit, and a gzip body is decompressed in bounded steps so a small bomb cannot
expand past the limit either.  The rest of a refused body is read and thrown
away (up to a bound) before the connection closes: a client that writes its
whole body before reading, as most do, then sees the 413 instead of a reset.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import os
import socket
import ssl
import threading
import time
import zlib
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import urlsplit

import msgspec

from . import __version__, events, exposition
from .webconfig import BasicAuth, RateLimiter, WebConfig, allowed_peer, constant_time_equal, ssl_context

_log = logging.getLogger(__name__)

BEARER_TOKEN_ENV = "AGENT_EXPORTER_BEARER_TOKEN"

# How much of a refused body is read and discarded so the client sees the answer.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
DRAIN_TIMEOUT_SECONDS = 5.0
# Keep-alive connections idle this long are closed.
IDLE_TIMEOUT_SECONDS = 300.0
TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0
_READ_CHUNK = 256 * 1024

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"

_encode_json = msgspec.json.Encoder().encode


class HTTPError(Exception):
    """An error answer; `reason` (when set) is counted as rejected events."""

    def __init__(self, status: HTTPStatus, message: str, *, reason: str | None = None, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = tuple(headers)


class _BodyTooLarge(Exception):
    pass


def parse_listen_address(address: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (all interfaces) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {address!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) but never past `limit` bytes of output."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = data
        while pending and not inflater.eof:
            # max_length is >= 1 here (out never exceeds limit), and 0 would mean "unbounded".
            out += inflater.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise _BodyTooLarge
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise zlib.error("truncated gzip stream")
        data = inflater.unused_data
    return bytes(out)


def read_bearer_token(path: str) -> str | None:
    """The /v1/* bearer token: the environment wins over the config's file."""
    token = os.environ.get(BEARER_TOKEN_ENV, "").strip()
    if token:
        return token
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise ValueError(f"server.bearer_token_file: cannot read {path}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"server.bearer_token_file: {path} is empty")
        return token
    return None


class Service:
    """What the HTTP layer serves: a Telemetry, its auth settings, the healing remediator.

    `ingest=False` (the embedded server of Telemetry.serve) serves only the
    landing page, /metrics and health; `remediator` (healing.AlertRemediator)
    enables /v1/alertmanager and /v1/agents.
    """

    def __init__(self, telemetry, *, max_body_bytes: int = 10 * 1024 * 1024, bearer_token: str | None = None,
                 web_config: WebConfig | None = None, remediator=None, ingest: bool = True):
        self.telemetry = telemetry
        self.store = telemetry.store
        self.max_body_bytes = max_body_bytes
        self.bearer_token = bearer_token or None
        web_config = web_config or WebConfig()
        self.web_config = web_config
        self.basic_auth = BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None
        self.rate_limiter = RateLimiter(web_config.rate_limit) if web_config.rate_limit.interval_seconds else None
        self.extra_headers = tuple(web_config.headers.items())
        self.remediator = remediator
        self.ingest = ingest
        # Decoding and aggregating a batch is all CPU under the GIL.  Batches take turns
        # on this lock: a waiting thread sleeps on it instead of contending for the GIL,
        # so the running one is not forced to hand the GIL over every switch interval.
        self.ingest_lock = threading.Lock()

    @classmethod
    def from_config(cls, telemetry, *, web_config: WebConfig | None = None, remediator=None) -> "Service":
        server = telemetry.config.server
        return cls(telemetry, max_body_bytes=server.max_body_bytes,
                   bearer_token=read_bearer_token(server.bearer_token_file),
                   web_config=web_config, remediator=remediator)


class _Connections:
    """Which connections are inside a request, so shutdown can wait for exactly those."""

    def __init__(self):
        self._cond = threading.Condition()
        self._idle: set = set()
        self._busy: set = set()
        self.draining = False

    def opened(self, sock) -> None:
        with self._cond:
            self._idle.add(sock)

    def busy(self, sock) -> None:
        with self._cond:
            self._idle.discard(sock)
            self._busy.add(sock)

    def idle(self, sock) -> None:
        with self._cond:
            if sock in self._busy:
                self._busy.discard(sock)
                self._idle.add(sock)
                self._cond.notify_all()

    def closed(self, sock) -> None:
        with self._cond:
            self._idle.discard(sock)
            self._busy.discard(sock)
            self._cond.notify_all()

    def drain(self, timeout: float) -> int:
        """Stop reading from idle keep-alive connections, wait for in-flight requests.

        Returns how many requests were still in flight at the deadline (0 normally).
        """
        with self._cond:
            self.draining = True
            for sock in self._idle:
                try:
                    # The plain socket's shutdown: wakes the handler blocked reading
                    # the next request line (SSLSocket.shutdown would unwrap TLS).
                    socket.socket.shutdown(sock, socket.SHUT_RD)
                except OSError:
                    pass   # already gone
            self._cond.wait_for(lambda: not self._busy, timeout)
            return len(self._busy)

    def in_flight(self) -> int:
        with self._cond:
            return len(self._busy)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: str, service: Service):
        host, port = parse_listen_address(address)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.service = service
        tls = service.web_config.tls
        self.tls = tls
        self.ssl_context = ssl_context(tls) if tls is not None else None
        self.connections = _Connections()
        self.routes = _Handler.routes(service)
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the host, which can stall on DNS.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def get_request(self):
        sock, peer = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens in the connection's thread, not in the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, peer

    def handle_error(self, request, client_address) -> None:
        # Clients that vanish mid-request are routine for a server; log quietly.
        _log.debug("connection from %s failed", client_address, exc_info=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        host = self.server_address[0]
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"


_LANDING_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>agent-exporter</title></head>
<body>
<h1>agent-exporter</h1>
<p>Prometheus exporter for AI agent orchestrators, version {version}.</p>
<ul>
<li><a href="/metrics">Metrics</a></li>
{extra}<li><a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></li>
</ul>
</body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"agent-exporter/{__version__}"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS
    server: ExporterHTTPServer

    # -- connection lifecycle ---------------------------------------------

    def setup(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(TLS_HANDSHAKE_TIMEOUT_SECONDS)
            sock.do_handshake()
            if not allowed_peer(self.server.tls, sock.getpeercert()):
                raise ssl.SSLError("client certificate has no allowed SAN")
        super().setup()
        self.server.connections.opened(self.connection)

    def finish(self) -> None:
        self.server.connections.closed(self.connection)
        super().finish()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.connections.idle(self.connection)

    def parse_request(self) -> bool:
        self.server.connections.busy(self.connection)
        self._body_pending = False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client sends it.
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.server.service.max_body_bytes:
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, *self._error_body(
                f"request body of {length} bytes is over the limit of {self.server.service.max_body_bytes}"))
            return False
        return super().handle_expect_100()

    def log_message(self, format, *args) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    # -- dispatch -------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        service = self.server.service
        self._body_pending = self._declares_body()
        path = urlsplit(self.path).path
        try:
            if service.rate_limiter is not None and not service.rate_limiter.allow():
                raise HTTPError(HTTPStatus.TOO_MANY_REQUESTS, "rate limit exceeded")
            self._authorize(path)
            routes = self.server.routes.get(path)
            if routes is None:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            action = routes.get(method)
            if action is None:
                raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}",
                                headers=(("Allow", ", ".join(routes)),))
            action(self)
        except HTTPError as err:
            if err.reason is not None:
                service.store.count_rejected(err.reason)
            self._send(err.status, *self._error_body(err.message), headers=err.headers)
        finally:
            if self._body_pending:
                self._discard_body()

    @staticmethod
    def routes(service: Service) -> dict:
        """path -> {method: handler method}."""
        routes = {
            "/": {"GET": _Handler._landing},
            "/metrics": {"GET": _Handler._metrics},
            "/-/healthy": {"GET": _Handler._healthy},
            "/-/ready": {"GET": _Handler._ready},
        }
        if service.ingest:
            routes["/v1/events"] = {"POST": _Handler._post_events}
        if service.remediator is not None:
            routes["/v1/alertmanager"] = {"POST": _Handler._post_alertmanager}
            routes["/v1/agents"] = {"GET": _Handler._agents}
        return routes

    # -- auth ------------------------------------------------------------------

    def _authorize(self, path: str) -> None:
        """Basic auth (web config) guards everything; the bearer token guards /v1/*.

        When both are configured, a /v1/* request may present either one.
        """
        service = self.server.service
        needs_bearer = service.bearer_token is not None and path.startswith("/v1/")
        if service.basic_auth is None and not needs_bearer:
            return
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        scheme = scheme.lower()
        if needs_bearer and scheme == "bearer" and constant_time_equal(credentials.strip(), service.bearer_token):
            return
        if service.basic_auth is not None and scheme == "basic" and self._basic_ok(service.basic_auth, credentials):
            return
        challenge = "Basic" if service.basic_auth is not None else "Bearer"
        raise HTTPError(HTTPStatus.UNAUTHORIZED, "Unauthorized",
                        headers=(("WWW-Authenticate", challenge),))

    @staticmethod
    def _basic_ok(basic_auth: BasicAuth, credentials: str) -> bool:
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(":")
        return bool(sep) and basic_auth.check(user, password)

    # -- bodies ------------------------------------------------------------------

    def _declares_body(self) -> bool:
        if self.headers.get("Transfer-Encoding"):
            return True
        length = self.headers.get("Content-Length", "0").strip()
        return not length.isdigit() or int(length) > 0

    def _read_body(self) -> bytes:
        """The whole request body, within the limit (HTTPError 411/413/400 otherwise)."""
        limit = self.server.service.max_body_bytes
        transfer = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if transfer:
            if self.headers.get("Content-Length") is not None:
                self.close_connection = True
                raise HTTPError(HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length are set")
            if transfer != "chunked":
                self.close_connection = True
                raise HTTPError(HTTPStatus.NOT_IMPLEMENTED, f"unsupported Transfer-Encoding {transfer!r}")
            self._body_pending = False
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length or a chunked body is required")
        length = length.strip()
        if not length.isdigit():
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length!r}")
        size = int(length)
        if size > limit:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body of {size} bytes is over the limit of {limit}", reason="body_too_large")
        self._body_pending = False
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "request body ended early")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body; past `limit`, the rest is read and discarded (bounded), then 413."""
        body = bytearray()
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size < 0:
                self.close_connection = True
                raise HTTPError(HTTPStatus.BAD_REQUEST, "malformed chunked body")
            if size == 0:
                break
            total += size
            if total > DRAIN_LIMIT_BYTES:
                self.close_connection = True
                raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"request body is over the limit of {limit} bytes", reason="body_too_large")
            chunk = self._read_exactly(size, keep=total <= limit)
            if total <= limit:
                body += chunk
            if self.rfile.readline(3).strip():
                self.close_connection = True
                raise HTTPError(HTTPStatus.BAD_REQUEST, "malformed chunked body")
        while self.rfile.readline(8192).strip():
            pass   # trailer fields carry nothing we use
        if total > limit:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body of {total} bytes is over the limit of {limit}", reason="body_too_large")
        return bytes(body)

    def _read_exactly(self, size: int, *, keep: bool) -> bytes:
        parts, remaining = [], size
        while remaining:
            data = self.rfile.read(min(remaining, _READ_CHUNK))
            if not data:
                self.close_connection = True
                raise HTTPError(HTTPStatus.BAD_REQUEST, "request body ended early")
            if keep:
                parts.append(data)
            remaining -= len(data)
        return b"".join(parts)

    def _discard_body(self) -> None:
        """Read and drop a body the answer did not need, so the client sees that answer.

        Sent after the response: a body within the limit keeps the connection
        usable; a larger one (the response said Connection: close) is drained
        up to DRAIN_LIMIT_BYTES before the close.
        """
        self._body_pending = False
        try:
            self.connection.settimeout(DRAIN_TIMEOUT_SECONDS)
            if (self.headers.get("Transfer-Encoding") or "").strip().lower() == "chunked":
                try:
                    self._read_chunked(0)    # keeps nothing; ends with a 413 we ignore
                except HTTPError:
                    self.close_connection = True
                return
            length = self.headers.get("Content-Length", "").strip()
            if not length.isdigit():
                self.close_connection = True
                return
            remaining = min(int(length), DRAIN_LIMIT_BYTES)
            while remaining:
                data = self.rfile.read(min(remaining, _READ_CHUNK))
                if not data:
                    break
                remaining -= len(data)
            if int(length) > DRAIN_LIMIT_BYTES:
                self.close_connection = True
        except OSError:
            self.close_connection = True
        finally:
            if not self.close_connection:
                self.connection.settimeout(self.timeout)

    def _keeps_connection_after_body(self) -> bool:
        """Whether the unread body is small enough to read and keep the connection."""
        if not self._body_pending:
            return True
        if self.headers.get("Transfer-Encoding"):
            return False
        length = self.headers.get("Content-Length", "").strip()
        return length.isdigit() and int(length) <= self.server.service.max_body_bytes

    # -- responses -----------------------------------------------------------------

    def _error_body(self, message: str) -> tuple[bytes, str]:
        if urlsplit(self.path).path.startswith("/v1/"):
            return _encode_json({"error": message}), _JSON
        return (message + "\n").encode(), _TEXT

    def _send(self, status: HTTPStatus, body, content_type: str, *, headers=()) -> None:
        service = self.server.service
        if self.server.connections.draining or not self._keeps_connection_after_body():
            self.close_connection = True
        head = [f"{self.protocol_version} {status.value} {status.phrase}",
                f"Server: {self.server_version}",
                f"Date: {self.date_time_string()}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers]
        head += [f"{name}: {value}" for name, value in service.extra_headers]
        if self.close_connection:
            head.append("Connection: close")
        head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if len(body) < 65536:
            self.wfile.write(head + body)    # one segment for the small answers of the ingest path
        else:
            self.wfile.write(head)
            self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, document) -> None:
        self._send(status, _encode_json(document), _JSON)

    # -- endpoints -------------------------------------------------------------------

    def _landing(self) -> None:
        extra = ""
        if self.server.service.remediator is not None:
            extra = '<li><a href="/v1/agents">Agent health</a></li>\n'
        page = _LANDING_PAGE.format(version=html.escape(__version__), extra=extra)
        self._send(HTTPStatus.OK, page.encode(), _HTML)

    def _healthy(self) -> None:
        self._send(HTTPStatus.OK, b"Healthy.\n", _TEXT)

    def _ready(self) -> None:
        if self.server.connections.draining:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"Shutting down.\n", _TEXT)
        else:
            self._send(HTTPStatus.OK, b"Ready.\n", _TEXT)

    def _metrics(self) -> None:
        openmetrics, content_type = exposition.negotiate(self.headers.get("Accept"))
        body = self.server.service.telemetry.render(openmetrics)
        headers = [("Vary", "Accept, Accept-Encoding")]
        if exposition.accepts_gzip(self.headers.get("Accept-Encoding")):
            body = exposition.gzip_body(body)
            headers.append(("Content-Encoding", "gzip"))
        self._send(HTTPStatus.OK, body, content_type, headers=headers)

    def _post_events(self) -> None:
        service = self.server.service
        content_type = self.headers.get("Content-Type")
        if events.body_format(content_type) is None:
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"unsupported Content-Type {content_type!r}: send application/json "
                            "or application/x-ndjson", reason="unsupported_media_type")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"unsupported Content-Encoding {encoding!r}: send gzip or identity",
                            reason="unsupported_media_type")
        body = self._read_body()
        if encoding != "identity":
            try:
                body = gunzip_bounded(body, service.max_body_bytes)
            except _BodyTooLarge:
                raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"decompressed body is over the limit of {service.max_body_bytes} bytes",
                                reason="body_too_large") from None
            except zlib.error as exc:
                raise HTTPError(HTTPStatus.BAD_REQUEST, f"invalid gzip body: {exc}", reason="invalid_body") from None
        with service.ingest_lock:
            try:
                batch = events.decode_body(body, content_type)
            except events.BodyError as exc:
                raise HTTPError(HTTPStatus.BAD_REQUEST, str(exc), reason="invalid_body") from None
            if batch.events:
                service.telemetry.record_batch(batch.events)
        for reason, n in Counter(r.reason for r in batch.rejected).items():
            service.store.count_rejected(reason, n)
        document = {
            "accepted": len(batch.events),
            "rejected": [{"index": r.index, "reason": r.reason, "error": r.error} for r in batch.rejected],
        }
        if not batch.events:
            document["error"] = "no usable events in the request"
        self._send_json(HTTPStatus.OK if batch.events else HTTPStatus.BAD_REQUEST, document)

    def _post_alertmanager(self) -> None:
        content_type = self.headers.get("Content-Type") or ""
        if content_type.split(";", 1)[0].strip().lower() != _JSON:
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the webhook payload as application/json")
        try:
            payload = msgspec.json.decode(self._read_body())
        except msgspec.DecodeError as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"invalid JSON: {exc}") from None
        try:
            outcome = self.server.service.remediator.handle_webhook(payload)
        except ValueError as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        self._send_json(HTTPStatus.OK, outcome if outcome is not None else {"status": "ok"})

    def _agents(self) -> None:
        self._send_json(HTTPStatus.OK, self.server.service.remediator.agents_status())


class ServerHandle:
    """A running server in a background thread: .url, .port, .stop()."""

    def __init__(self, server: ExporterHTTPServer):
        self.server = server
        # A short poll interval: stopping waits for the accept loop to notice, at most this long.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="agent-exporter-http", daemon=True)
        self._accepting = True
        self._lock = threading.Lock()
        self._thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def stop_accepting(self) -> None:
        """End the accept loop and close the listening socket; idempotent."""
        with self._lock:
            if not self._accepting:
                return
            self._accepting = False
            self.server.shutdown()
            self.server.server_close()
            self._thread.join()

    def stop(self, timeout: float = 10.0) -> int:
        """Stop accepting and wait (up to `timeout`) for in-flight requests; returns how many did not finish."""
        self.stop_accepting()
        return self.server.connections.drain(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(service: Service, address: str) -> ServerHandle:
    return ServerHandle(ExporterHTTPServer(address, service))


def start_embedded(telemetry, address: str) -> ServerHandle:
    """Telemetry.serve(): the landing page, /metrics and health, in a background thread."""
    return start_server(Service(telemetry, ingest=False), address)


def wait_until_stopped(handle: ServerHandle, stop: threading.Event, *, grace_seconds: float = 30.0) -> int:
    """Block until `stop` is set, then shut down gracefully; returns the unfinished request count."""
    while not stop.wait(1.0):
        pass
    started = time.monotonic()
    handle.stop_accepting()
    _log.info("stopped accepting connections; waiting for %d in-flight request(s)",
              handle.server.connections.in_flight())
    unfinished = handle.stop(grace_seconds)
    _log.info("server stopped in %.3fs (%d request(s) unfinished)", time.monotonic() - started, unfinished)
    return unfinished
