"""The HTTP service: an ASGI application served by uvicorn (httptools, uvloop).

    GET  /                  landing page
    GET  /metrics           text 0.0.4, or OpenMetrics when Accept asks; gzip when accepted
    POST /v1/events         JSON object, JSON array or NDJSON, optionally gzip-encoded
    POST /v1/traces         OTLP/HTTP traces (protobuf or JSON), when an OTLP receiver is given
    POST /v1/alertmanager   Alertmanager webhook: self-healing, and the `log` alert channel
    GET  /v1/agents         per-agent health as JSON
    GET  /-/healthy         liveness; GET /-/ready: readiness (503 once shutting down, to a
                            request on a connection already open: new ones are refused)

HEAD is answered on every GET endpoint, as GET without the body.

`ExporterApp` is a plain ASGI 3 application: `Telemetry.asgi_app()` hands it
to an orchestrator's own FastAPI or Starlette server, and `start_server` /
`serve` run it on uvicorn.  uvicorn with httptools was chosen over granian by
measurement (BENCHMARKS.md) and because it takes a Python SSLContext, which
the exporter-toolkit TLS settings need.

The web config is read as it is now (webconfig.WatchedWebConfig) for each
request (basic_auth_users, the headers, client_allowed_sans) and each new TLS
connection (certificate, key, client CAs, versions, ciphers, client auth), as
exporter-toolkit reads it; while the file is invalid a request is a 503 and a
TLS handshake fails.  The rate limit and whether TLS is on are set at start.
The /v1/* bearer token's file is read again when it changes too
(credentials.TokenFile); while it cannot be read, a request sending a bearer
token is a 503.

Every request gets an answer: a body that cannot be used is a 4xx naming the
reason, and an unexpected exception in a handler is a 500 with a JSON body,
an error-level log line with the traceback, and a count in
orchestrator_exporter_http_requests_total{handler,code}, like every answer.

Bodies are bounded: a declared Content-Length over `max_body_bytes` is refused
with 413 before anything is read (no `100 Continue` is sent), a chunked body
is refused once it passes the limit, and a gzip body is decompressed in
bounded steps so a small bomb cannot expand past the limit either.  The
connection stays open after a 413 while the client sends the rest (uvicorn
reads and drops it), so a client that writes its whole body before reading,
as most do, sees the answer rather than a reset.  A request line and headers past
MAX_HEADER_BYTES (plus at most one read) are a 431, a URL past MAX_URL_BYTES a 414, and a request the HTTP
parser refuses is uvicorn's 400; all are counted under handler="other", as are the
408s below.

Time is bounded too: a connection whose request has not arrived whole within
one to two REQUEST_TIMEOUT_SECONDS (a silent one included), or whose response
could not be written for as long (a client that stopped reading), is closed, and an idle keep-alive
connection after IDLE_TIMEOUT_SECONDS (uvicorn's timer).  A request begun but not whole is answered
408 before its connection is closed.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import signal
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import TypeVar

import msgspec

from . import catalog, events, exposition
from .credentials import BEARER_TOKEN_ENV, FixedToken, TokenFile, bearer_token, given_token
from .version import __version__
from .webconfig import (BasicAuth, FixedWebConfig, LoadedWebConfig, RateLimiter, WatchedWebConfig, WebConfigError,
                        allowed_peer, constant_time_equal)

_log = logging.getLogger(__name__)
_Processed = TypeVar("_Processed")
_Result = TypeVar("_Result")
_alert_log = logging.getLogger("agent_exporter.alerts")

# Keep-alive connections idle this long are closed (longer than any scrape interval).
IDLE_TIMEOUT_SECONDS = 75
# A request (line, headers and body) that has not arrived whole this long after its first byte, or after
# the connection opened, or a response its client does not read for this long, has its connection closed
# (in one to two times this: see _protocol_class).
REQUEST_TIMEOUT_SECONDS = 60.0
SHUTDOWN_GRACE_SECONDS = 30.0
# A request's line and headers may take this many bytes (Go's http.Server: 1 MiB); more is a 431.
MAX_HEADER_BYTES = 1024 * 1024
# The longest URL httptools parses (its offsets are 16-bit); a longer one is a 414.
MAX_URL_BYTES = 65535

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
# The handler label of requests to paths we do not serve: one value, whatever the path.
_OTHER = "other"

_encode_json = msgspec.json.Encoder().encode


class HTTPError(Exception):
    """An error answer; `reason` (when set) is what /v1/events counts it as among rejected events."""

    def __init__(self, status: HTTPStatus, message: str, *, reason: str | None = None, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = tuple(headers)


class _ClientGone(Exception):
    """The client disconnected before its request was read: there is no one to answer."""


def parse_listen_address(address: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (all interfaces) -> (host, port)."""
    if not isinstance(address, str):
        raise ValueError(f"listen address {address!r}: expected a HOST:PORT string, as '127.0.0.1:9464'")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {address!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


# gunzip_bounded's input is fed in slices of this size: zlib copies what follows a member's end
# (unused_data) at each member, so a body of many tiny members costs a slice per member, not the
# rest of the body per member (quadratic: 2 MiB of empty members took 8.6 s).
_GZIP_INPUT_SLICE = 4096


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) but never past `limit` bytes of output.

    Raises OverflowError past the limit, zlib.error for a body that is not whole gzip.
    """
    out = bytearray()
    body = memoryview(data)
    position = 0
    inflater = None                 # the member being inflated
    pending: bytes | memoryview = b""
    while pending or position < len(body):
        if not pending:
            pending = body[position:position + _GZIP_INPUT_SLICE]
            position += len(pending)
        if inflater is None:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        # max_length is >= 1 here (out never exceeds limit), and 0 would mean "unbounded".
        out += inflater.decompress(pending, limit + 1 - len(out))
        if len(out) > limit:
            raise OverflowError
        if inflater.eof:
            pending, inflater = inflater.unused_data, None      # the next member's first bytes
        else:
            pending = inflater.unconsumed_tail
    if inflater is not None:
        raise zlib.error("truncated gzip stream")
    return bytes(out)


# The key under which the HTTP protocol puts the client certificate (ssl.getpeercert()) in a request's scope.
PEER_CERTIFICATE = "agent_exporter.peer_certificate"


def _check_peer(request: _Request, web_config: LoadedWebConfig) -> None:
    """client_allowed_sans, checked on each request against the config of the moment, so that a SAN
    removed from the list also shuts out connections opened before.  A scope without the certificate (an
    orchestrator's own server, see Telemetry.asgi_app) does not pass the check."""
    tls = web_config.config.tls
    if tls is not None and tls.client_allowed_sans and not allowed_peer(tls, request.scope.get(PEER_CERTIFICATE)):
        raise HTTPError(HTTPStatus.FORBIDDEN, "the client certificate has no allowed SAN")


def read_bearer_token(path: str) -> FixedToken | TokenFile | None:
    """The /v1/* bearer token: $AGENT_EXPORTER_BEARER_TOKEN, else server.bearer_token_file, read again
    when it changes (credentials.py)."""
    return bearer_token(path, "observability.server.bearer_token_file", env=BEARER_TOKEN_ENV)


def _positive(name: str, value, kind):
    if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < float("inf"):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return value


def _remediator(remediator):
    """The remediator the webhook and /v1/agents call: healing.AlertRemediator, or any object with
    its two methods."""
    if remediator is not None and not all(callable(getattr(remediator, method, None))
                                          for method in ("handle_webhook", "agents_status")):
        raise ValueError(f"remediator: expected the Healer's healing.AlertRemediator (or None), "
                         f"not {type(remediator).__name__}")
    return remediator


class Service:
    """What the HTTP layer serves: a Telemetry, its auth settings, and the optional endpoints.

    `ingest=False` (the embedded server of Telemetry.serve) serves neither
    /v1/events nor /v1/traces; `remediator` (healing.AlertRemediator)
    enables /v1/agents and makes /v1/alertmanager act on alerts;
    `log_alerts` makes /v1/alertmanager write each alert as a log line (the
    `log` alert channel); `otlp` (an otlp.OTLPReceiver) enables /v1/traces.
    `bearer_token` guards /v1/*: a string, or a credentials.TokenFile, read
    again when it changes (what `from_config` gives for server.bearer_token_file).
    """

    def __init__(self, telemetry, *, max_body_bytes: int = 10 * 1024 * 1024,
                 bearer_token: str | FixedToken | TokenFile | None = None,
                 web_config: WatchedWebConfig | None = None, remediator=None, log_alerts: bool = False,
                 otlp=None, ingest: bool = True, request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS):
        self.telemetry = telemetry
        self.store = telemetry.store
        self.max_body_bytes = _positive("max_body_bytes", max_body_bytes, int)
        self.request_timeout_seconds = _positive("request_timeout_seconds", request_timeout_seconds, (int, float))
        self.bearer_token = given_token(bearer_token)
        self.web_config = web_config or FixedWebConfig()
        self.basic_auth = BasicAuth()       # one bcrypt cache, whatever the users are now
        # Built once from the file as it was at start, as exporter-toolkit's Serve builds its limiter.
        rate_limit = self.web_config.initial.config.rate_limit
        self.rate_limiter = RateLimiter(rate_limit) if rate_limit.interval_seconds else None
        self.remediator = _remediator(remediator)
        self.log_alerts = log_alerts
        self.otlp = otlp
        self.ingest = ingest
        if ingest:
            for reason in catalog.REJECTION_REASONS:
                self.store.count_rejected(reason, 0)
        self.draining = False
        self.in_flight = 0
        self.cancelled = 0          # requests the server cancelled unanswered (at the end of the shutdown grace)

    @classmethod
    def from_config(cls, telemetry, *, web_config: WatchedWebConfig | None = None, remediator=None, otlp=None,
                    ingest: bool = True, max_body_bytes: int | None = None,
                    bearer_token: str | None = None) -> "Service":
        """The Service the telemetry's config describes; body limit and bearer token may be overridden."""
        config = telemetry.config
        return cls(telemetry,
                   max_body_bytes=config.server.max_body_bytes if max_body_bytes is None else max_body_bytes,
                   bearer_token=read_bearer_token(config.server.bearer_token_file) if bearer_token is None
                   else bearer_token,
                   web_config=web_config, remediator=remediator, log_alerts="log" in config.alerting.channels,
                   otlp=otlp, ingest=ingest)


_LANDING_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>agent-exporter</title></head>
<body>
<h1>agent-exporter</h1>
<p>Prometheus exporter for AI agent orchestrators, version {version}.</p>
<ul>
<li><a href="{root}/metrics">Metrics</a></li>
{extra}<li><a href="{root}/-/healthy">Health</a> &middot; <a href="{root}/-/ready">Readiness</a></li>
</ul>
</body></html>
"""


class _Request:
    """One request as the handlers see it: scope fields, lower-cased headers, the body reader."""

    __slots__ = ("scope", "receive", "path", "method", "headers")

    def __init__(self, scope, receive):
        self.scope = scope
        self.receive = receive
        self.path = scope["path"]
        self.method = scope["method"]
        self.headers = {name: value for name, value in scope["headers"]}

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


# The versions of ASGI scopes (uvicorn speaks 1.0 and 1.1; an app mounted under an HTTP/2 or
# HTTP/3 server sees "2" and "3").  httptools parses some request lines of other versions
# ("HTTP/2.0", "HTTP/0.9"), which reached the endpoints as if they were HTTP/1.1 (RFC 9110,
# 15.6.6: 505); it refuses the rest ("HTTP/1.2", "HTTP/3.0") itself, with uvicorn's 400.
_HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})


# Fields a request gives once (RFC 9110, 5.3): given twice, which one counts is a guess, and a
# proxy in front may have guessed otherwise (checked one Authorization, passed on another).
_SINGLETON_HEADERS = (b"host", b"authorization", b"content-type", b"content-encoding", b"content-length")


def _repeated_header(request: _Request) -> str | None:
    """A field the request gives more than once among _SINGLETON_HEADERS, if any."""
    all_headers = request.scope["headers"]
    if len(request.headers) == len(all_headers):        # the dict kept one of each: none repeated
        return None
    names = [name for name, _ in all_headers]
    return next((name.decode() for name in _SINGLETON_HEADERS if names.count(name) > 1), None)


class _Response:
    """An answer: a whole `body`, or a `stream` of pieces (sent as they come, chunked; whole to HTTP/1.0)."""

    __slots__ = ("status", "body", "content_type", "headers", "stream")

    def __init__(self, status: int, body: bytes, content_type: bytes, headers=(), stream=None):
        self.status = int(status)
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.stream = stream


# The pieces of a streamed answer are gathered up to this size before each is sent.
STREAM_PIECE_BYTES = 256 * 1024
# A plain request body under this size is decoded in the event loop (a few milliseconds at most:
# cheaper there than a thread's round trip); a larger or gzip one in a worker thread.
INLINE_BODY_BYTES = 256 * 1024
# The app's own threads for rendering scrapes and large bodies.  Not the loop's default
# executor: mounted in an orchestrator, that one also runs the orchestrator's asyncio.to_thread()
# calls (blocking LLM clients among them), and a scrape queued behind those would time out.
# bcrypt, one run at a time (webconfig.BasicAuth), has a thread of its own: a flood of wrong
# passwords queues there, not in front of scrapes.
WORKER_THREADS = 4


def _said(response: _Response) -> str:
    """What a refusal told its client, for a log line: its text, or what it was."""
    content_type = response.content_type.decode()
    if content_type.startswith(("application/json", "text/")):
        return response.body[:300].decode("utf-8", "replace").strip()
    return f"{len(response.body)} bytes of {content_type}"


def _next_piece(pieces) -> bytes:
    """The next STREAM_PIECE_BYTES or so of `pieces` (b"" at the end): produced off the event loop."""
    gathered, size = [], 0
    for piece in pieces:
        gathered.append(piece)
        size += len(piece)
        if size >= STREAM_PIECE_BYTES:
            break
    return b"".join(gathered)


_OPTIONAL_ENDPOINTS = {
    "/v1/traces": "OTLP in is served by `agent-exporter serve`",
    "/v1/alertmanager": "served by `agent-exporter serve` with healing.enabled or the log alert channel, "
                        "in process by Telemetry.serve() or asgi_app() given the Healer's AlertRemediator",
    "/v1/agents": "served by `agent-exporter serve` with healing.enabled, "
                  "in process by Telemetry.serve() or asgi_app() given the Healer's AlertRemediator",
}


class ExporterApp:
    """The ASGI application of a Service.  Mount it anywhere: paths are read relative to root_path."""

    def __init__(self, service: Service):
        self.service = service
        self.routes = self._routes()
        self.absent = self._absent()
        # Made on first use, on the event loop's thread.
        self._workers: ThreadPoolExecutor | None = None
        self._bcrypt: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """End the threads once their jobs are done: the server stopped, the lifespan ended,
        or the Telemetry shut down.  Used again, the app starts new ones."""
        for pool in (self._workers, self._bcrypt):
            if pool is not None:
                pool.shutdown(wait=False)
        self._workers = self._bcrypt = None

    async def _off_loop(self, fn: Callable[..., _Result], *args) -> _Result:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="agent-exporter-worker")
        return await asyncio.get_running_loop().run_in_executor(self._workers, fn, *args)

    def _routes(self) -> dict:
        """path -> {method: handler}."""
        service = self.service
        routes = {
            "/": {"GET": self._landing},
            "/metrics": {"GET": self._metrics},
            "/-/healthy": {"GET": self._healthy},
            "/-/ready": {"GET": self._ready},
        }
        if service.ingest:
            routes["/v1/events"] = {"POST": self._post_events}
            if service.otlp is not None:
                routes["/v1/traces"] = {"POST": self._post_traces}
        if service.remediator is not None or service.log_alerts:
            routes["/v1/alertmanager"] = {"POST": self._post_alertmanager}
        if service.remediator is not None:
            routes["/v1/agents"] = {"GET": self._agents}
        for methods in routes.values():
            if "GET" in methods:
                # HEAD is GET without the body (RFC 9110, 9.3.2): uvicorn sends no body for it.
                methods["HEAD"] = methods["GET"]
        return routes

    def _absent(self) -> dict:
        """The /v1/ endpoints this service leaves out -> why: their 404 says so."""
        absent = {path: why for path, why in _OPTIONAL_ENDPOINTS.items() if path not in self.routes}
        if not self.service.ingest:
            absent.update(dict.fromkeys(("/v1/events", "/v1/traces"), "events are taken by `agent-exporter serve` "
                                        "or Telemetry.asgi_app(), not by Telemetry.serve()"))
        return absent

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._refuse_websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _handler(self, scope) -> tuple[str, dict | None]:
        """The request's path under the mount point, and its routes (None for no endpoint)."""
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        return path, self.routes.get(path)

    async def _refuse_websocket(self, scope, receive, send) -> None:
        """No endpoint speaks WebSocket: the handshake is refused (the server answers 403), and
        counted as any request is, without an error in the log."""
        path, routes = self._handler(scope)
        if (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})     # policy violation
        self.service.store.count_http_request(path if routes is not None else _OTHER, 403)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        service = self.service
        service.in_flight += 1          # until the last byte is sent: a scrape still streaming is in flight
        try:
            await self._exchange(scope, receive, send)
        except asyncio.CancelledError:  # the server gave up on it (at the end of the shutdown grace)
            service.cancelled += 1
            raise
        finally:
            service.in_flight -= 1

    async def _exchange(self, scope, receive, send) -> None:
        request = _Request(scope, receive)
        path, routes = self._handler(scope)
        request.path = path
        handler = path if routes is not None else _OTHER
        web_config = self._web_config()
        try:
            response = await self._respond(request, routes, web_config)
        except _ClientGone:
            return
        except asyncio.CancelledError:
            if not self.service.draining:
                raise
            # The shutdown grace ended before the request did (a client that stopped sending its body):
            # it is answered, as uvicorn would with a 500 and an error line and traceback each.
            self.service.cancelled += 1
            response = self._error(request, HTTPStatus.SERVICE_UNAVAILABLE, "the exporter is shutting down")
            response.headers.append((b"connection", b"close"))
        except Exception:  # noqa: BLE001 - any fault becomes a 500, never a dropped connection
            _log.error("%s %s failed", request.method, path, exc_info=True)
            response = self._error(request, HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the exporter's log")
        self.service.store.count_http_request(handler, response.status)
        if response.status >= 400 and _log.isEnabledFor(logging.DEBUG):
            # The client hears why; the operator can, at debug level (a refused scrape, a bad sender).
            _log.debug("%s %s answered %d: %s", request.method, path, response.status, _said(response))
        headers = [(b"content-type", response.content_type), *response.headers,
                   *(web_config.response_headers if web_config is not None else ())]
        if response.stream is not None and request.method == "HEAD":
            # GET's headers (no length: GET streams); the pieces are not rendered.
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if response.stream is not None and scope["http_version"] == "1.0":
            # HTTP/1.0 has no chunked coding (RFC 9112, 7.1): the whole body, with its length.
            response.body = await self._off_loop(b"".join, response.stream)
            response.stream = None
        if response.stream is None:
            headers.append((b"content-length", str(len(response.body)).encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
            return
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        while piece := await self._off_loop(_next_piece, response.stream):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def _web_config(self) -> LoadedWebConfig | None:
        """The web config for this request; None while its file is invalid (logged once per problem)."""
        try:
            return self.service.web_config.current()
        except WebConfigError:
            return None

    async def _respond(self, request: _Request, routes, web_config: LoadedWebConfig | None) -> _Response:
        service = self.service
        try:
            if web_config is None:
                # exporter-toolkit answers 500 while its file does not parse; 503, which OTLP exporters
                # retry (the gRPC receiver answers UNAVAILABLE), loses no spans while the file is fixed.
                # The reason is in the log only.
                raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "the web config is invalid; see the exporter's log")
            _check_peer(request, web_config)
            if request.scope["http_version"] not in _HTTP_VERSIONS:
                raise HTTPError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                f"HTTP/{request.scope['http_version']} is not supported: send HTTP/1.1")
            repeated = _repeated_header(request)
            if repeated is not None:
                raise HTTPError(HTTPStatus.BAD_REQUEST, f"the {repeated} header is given more than once")
            if request.scope["http_version"] == "1.1" and b"host" not in request.headers:
                # RFC 9112, 3.2: a server answers 400 to an HTTP/1.1 request without one.
                raise HTTPError(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs exactly one Host header")
            if service.rate_limiter is not None and not service.rate_limiter.allow():
                raise HTTPError(HTTPStatus.TOO_MANY_REQUESTS, "rate limit exceeded")
            users = web_config.config.basic_auth_users
            if users or service.bearer_token is not None:
                await self._authorize(request, users)
            if routes is None:
                why = self.absent.get(request.path)
                message = f"no such endpoint: {request.path}" + (f" ({why})" if why else "")
                raise HTTPError(HTTPStatus.NOT_FOUND, message)
            handler = routes.get(request.method)
            if handler is None:
                raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.path}",
                                headers=((b"allow", ", ".join(routes).encode()),))
            return await handler(request)
        except HTTPError as err:
            response = self._error(request, err.status, err.message)
            response.headers += err.headers
            if b"100-continue" in (request.headers.get(b"expect") or b"").lower() and err.status >= 400:
                # The client waits for "100 Continue" before its body, which will not come.
                response.headers.append((b"connection", b"close"))
            return response

    def _error(self, request: _Request, status: HTTPStatus, message: str) -> _Response:
        path = request.path
        if path == "/v1/traces" and self.service.otlp is not None:
            content_type, body = self.service.otlp.error_body(status, message, request.header(b"content-type"))
            return _Response(status, body, content_type.encode())
        if path.startswith("/v1/"):
            return _Response(status, _encode_json({"error": message}), _JSON)
        return _Response(status, (message + "\n").encode(), _TEXT)

    # -- auth ----------------------------------------------------------------------

    async def _authorize(self, request: _Request, users: dict[str, bytes]) -> None:
        """Basic auth (the web config's `users`) guards everything; the bearer token guards /v1/*.

        When both are configured, a /v1/* request may present either one.
        """
        service = self.service
        needs_bearer = service.bearer_token is not None and request.path.startswith("/v1/")
        if not users and not needs_bearer:
            return
        scheme, _, credentials = (request.header(b"authorization") or "").partition(" ")
        scheme = scheme.lower()
        if needs_bearer and scheme == "bearer" and constant_time_equal(credentials.strip(), self._token()):
            return
        if users and scheme == "basic" and await self._basic_ok(users, credentials):
            return
        challenge = b"Basic" if users else b"Bearer"
        raise HTTPError(HTTPStatus.UNAUTHORIZED, "Unauthorized", headers=((b"www-authenticate", challenge),))

    def _token(self) -> str:
        try:
            return self.service.bearer_token.current()
        except ValueError:      # the file became unreadable or invalid: logged once, by current()
            # 503, which OTLP exporters and Alertmanager retry: the request is fine, the exporter is not.
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE,
                            "the exporter cannot read its bearer token; see the exporter's log") from None

    async def _basic_ok(self, users: dict[str, bytes], credentials: str) -> bool:
        auth = self.service.basic_auth
        known = auth.cached_outcome(users, credentials)
        if known is not None:
            return known
        # bcrypt takes tens of milliseconds on purpose: off the event loop.
        if self._bcrypt is None:
            self._bcrypt = ThreadPoolExecutor(1, thread_name_prefix="agent-exporter-bcrypt")
        return await asyncio.get_running_loop().run_in_executor(self._bcrypt, auth.check_credentials, users,
                                                                credentials)

    # -- bodies --------------------------------------------------------------------

    async def _with_body(self, request: _Request, process: Callable[[bytes], _Processed]) -> _Processed:
        """`process` applied to the request's whole body, decompressed and within the limit (HTTPError
        413/415/400 otherwise): in the event loop for a small plain body, the common case, and in a
        worker thread for a large or gzip one, whose decoding would otherwise hold the loop (the
        orchestrator's own, when the app is mounted) for as long as it takes."""
        limit = self.service.max_body_bytes
        transfer = request.header(b"transfer-encoding")
        if transfer is not None and [coding.strip() for coding in transfer.lower().split(",")] != ["chunked"]:
            # The parser frames the chunks and would pass any other coding on undone (RFC 9112, 6.1: 501).
            raise HTTPError(HTTPStatus.NOT_IMPLEMENTED,
                            f"unsupported Transfer-Encoding {transfer!r}: send chunked, and compress with "
                            "Content-Encoding: gzip", reason="unsupported_media_type")
        encoding = (request.header(b"content-encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"unsupported Content-Encoding {encoding!r}: send gzip or identity",
                            reason="unsupported_media_type")
        declared = request.header(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body of {int(declared)} bytes is over the limit of {limit}",
                            reason="body_too_large")
        chunks, size = [], 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"request body is over the limit of {limit} bytes", reason="body_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if encoding == "identity":
            if size < INLINE_BODY_BYTES:
                return process(body)
            return await self._off_loop(process, body)
        return await self._off_loop(lambda: process(_gunzipped(body, limit)))

    # -- endpoints -------------------------------------------------------------------

    async def _landing(self, request: _Request) -> _Response:
        extra = ""
        if self.service.remediator is not None:
            extra = '<li><a href="{root}/v1/agents">Agent health</a></li>\n'
        root = html.escape(request.scope.get("root_path", ""))
        page = _LANDING_PAGE.format(version=html.escape(__version__), root=root, extra=extra.format(root=root))
        return _Response(HTTPStatus.OK, page.encode(), _HTML)

    async def _healthy(self, request: _Request) -> _Response:
        return _Response(HTTPStatus.OK, b"Healthy.\n", _TEXT)

    async def _ready(self, request: _Request) -> _Response:
        if self.service.draining:
            return _Response(HTTPStatus.SERVICE_UNAVAILABLE, b"Shutting down.\n", _TEXT)
        return _Response(HTTPStatus.OK, b"Ready.\n", _TEXT)

    async def _metrics(self, request: _Request) -> _Response:
        openmetrics, content_type = exposition.negotiate(request.header(b"accept"))
        # Streamed: a large store is rendered and sent piece by piece, off the event loop (so ingest
        # goes on) and never whole in memory.  The snapshot is taken here, so the scrape is consistent.
        pieces = await self._off_loop(self.service.telemetry.render_chunks, openmetrics)
        headers = [(b"vary", b"Accept, Accept-Encoding")]
        if exposition.accepts_gzip(request.header(b"accept-encoding")):
            pieces = exposition.gzipped(pieces)
            headers.append((b"content-encoding", b"gzip"))
        return _Response(HTTPStatus.OK, b"", content_type.encode(), headers, stream=iter(pieces))

    async def _post_events(self, request: _Request) -> _Response:
        # A refused request counts among rejected events (a body of OTLP spans or an Alertmanager
        # webhook does not: those are not events).
        try:
            return await self._accept_events(request)
        except HTTPError as err:
            if err.reason is not None:
                self.service.store.count_rejected(err.reason)
            raise

    async def _accept_events(self, request: _Request) -> _Response:
        content_type = request.header(b"content-type")
        if events.body_format(content_type) is None:
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"unsupported Content-Type {content_type!r}: send application/json "
                            "or application/x-ndjson, in UTF-8", reason="unsupported_media_type")
        return await self._with_body(request, functools.partial(self._ingest, content_type))

    def _ingest(self, content_type: str, body: bytes) -> _Response:
        service = self.service
        try:
            batch = events.decode_body(body, content_type)
        except events.BodyError as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(exc), reason="invalid_body") from None
        if batch.events:
            service.telemetry.record_batch(batch.events)
        for reason, n in batch.rejected_by_reason.items():
            service.store.count_rejected(reason, n)
        if batch.events and not batch.rejected:
            return _Response(HTTPStatus.OK, b'{"accepted":%d,"rejected":[]}' % len(batch.events), _JSON)
        document = {
            "accepted": len(batch.events),
            "rejected": [{"index": r.index, "reason": r.reason, "error": r.error} for r in batch.rejected],
        }
        omitted = sum(batch.rejected_by_reason.values()) - len(batch.rejected)
        if omitted:
            document["rejected_omitted"] = omitted      # beyond events.MAX_LISTED_REJECTIONS
        if not batch.events:
            document["error"] = "no usable events in the request"
        return _Response(HTTPStatus.OK if batch.events else HTTPStatus.BAD_REQUEST, _encode_json(document), _JSON)

    async def _post_traces(self, request: _Request) -> _Response:
        content_type = request.header(b"content-type") or ""
        status, answer_type, answer = await self._with_body(
            request, functools.partial(self.service.otlp.handle_http, content_type=content_type))
        return _Response(status, answer, answer_type.encode())

    async def _post_alertmanager(self, request: _Request) -> _Response:
        from .render.alertmanager import LOG

        service = self.service
        content_type = request.header(b"content-type") or ""
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the webhook payload as application/json")
        payload = await self._with_body(request, _webhook_payload)
        # The `log` channel's receiver; remediation notifications (the same alerts) are not logged twice.
        if service.log_alerts and payload.receiver == LOG:
            for alert in payload.alerts:
                _log_alert(alert)
        outcome = {"status": "ok", "alerts": len(payload.alerts)}
        if service.remediator is not None:
            outcome = service.remediator.handle_webhook(payload)
        return _Response(HTTPStatus.OK, _encode_json(outcome), _JSON)

    async def _agents(self, request: _Request) -> _Response:
        return _Response(HTTPStatus.OK, _encode_json(self.service.remediator.agents_status()), _JSON)


def _webhook_payload(body: bytes):
    from .healing.alertmanager import decode_webhook
    try:
        return decode_webhook(body)
    except ValueError as exc:
        raise HTTPError(HTTPStatus.BAD_REQUEST, str(exc)) from None


def _gunzipped(body: bytes, limit: int) -> bytes:
    try:
        return gunzip_bounded(body, limit)
    except OverflowError:
        raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"decompressed body is over the limit of {limit} bytes", reason="body_too_large") from None
    except zlib.error as exc:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"invalid gzip body: {exc}", reason="invalid_body") from None


_ALERT_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
                 "info": logging.INFO}


def _log_alert(alert) -> None:
    """The `log` alert channel: one line per firing or resolved alert, at its severity's level,
    as the legacy AlertingSystem's log channel wrote them."""
    labels, annotations = alert.labels, alert.annotations
    severity = labels.get("severity", "warning")
    level = _ALERT_LEVELS.get(severity, logging.WARNING) if alert.status == "firing" else logging.INFO
    summary = annotations.get("summary")
    others = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    _alert_log.log(level, "ALERT [%s] [%s] %s%s%s", severity.upper(), alert.status.upper(), labels["alertname"],
                   f": {summary}" if summary else "", f" ({others})" if others else "")


# -- running it on uvicorn ---------------------------------------------------------

def _uvicorn_config(app: ExporterApp, address: str):
    import uvicorn

    host, port = parse_listen_address(address)
    service = app.service
    tls = service.web_config.initial.config.tls is not None
    config = uvicorn.Config(
        app, host=host, port=port, http=_protocol_class(service.request_timeout_seconds, service.store), loop="uvloop",
        lifespan="on",
        # No proxy headers: the exporter is scraped and posted to directly, and the middleware
        # costs every request.
        log_config=None, access_log=False, server_header=False, date_header=True, proxy_headers=False,
        timeout_keep_alive=IDLE_TIMEOUT_SECONDS, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        ssl_context_factory=(lambda config, default: _CurrentSSLContext.of(service.web_config)) if tls else None)
    return config


class _CurrentSSLContext(ssl.SSLContext):
    """The listener's SSLContext: it wraps each new connection with the SSLContext of the web config as it
    is at that moment, the counterpart of exporter-toolkit's GetConfigForClient.  uvloop and asyncio start
    every accepted connection's TLS with `wrap_bio` on this object.

    An sni_callback that swaps SSLObject.context would also be called on each handshake, but OpenSSL's
    SSL_set_SSL_CTX moves only the certificate, key and CA store to the connection: the verify mode,
    versions and ciphers stay the listener's (tried: a context swapped in that required a client
    certificate let a client without one through), so a reload could not turn on client certificates."""

    web_config: WatchedWebConfig

    @classmethod
    def of(cls, web_config: WatchedWebConfig) -> "_CurrentSSLContext":
        context = cls(ssl.PROTOCOL_TLS_SERVER)
        context.web_config = web_config
        return context

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        try:
            context = self.web_config.current().ssl_context
        except WebConfigError:      # logged by current(), once per problem
            context = _refusing_context()
        return context.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


@functools.cache
def _refusing_context() -> ssl.SSLContext:
    """An SSLContext whose handshakes fail with an internal_error alert, as Go's does when
    GetConfigForClient returns an error: what a new connection gets while the web config is invalid.
    OpenSSL calls the server-name callback on every ClientHello, with or without SNI."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = lambda ssl_object, server_name, context: ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
    return context


def _protocol_class(request_timeout: float, store):
    """uvicorn's httptools protocol, with bounds on the time a request takes to arrive and on the size
    of its headers, the client certificate in each request's scope for the client_allowed_sans check
    (_check_peer), and a count of the requests refused before they reach the app."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):
        """uvicorn (0.54) arms its keep-alive timer only once a response is sent, and has no timeout
        for reading a request or writing a response: a connection that never completes a request
        (silent from the start, a partial header, a body that stops), or whose client stops reading
        the answer (holding a /metrics rendering), stayed open for ever, and enough of them exhaust
        the file descriptors.  Here each connection has a timer that fires every `request_timeout`
        seconds and closes the connection when, at two firings in a row, the same request was
        incomplete or the response's writing was paused with nothing sent since the firing before
        (the client took nothing); so either lives one to two periods, and Go's http.Server
        ReadTimeout and WriteTimeout are the model, though a client that reads, however slowly, is
        not cut off.  Between requests uvicorn's keep-alive timeout applies as before.  Per request
        this costs four attribute writes; the timer is per connection."""

        _receiving = True       # a request is incomplete (a new connection awaits its first one)
        _drained = False        # the response's writing resumed since the last firing: the client reads
        _buffered = 0           # bytes waiting to be sent at the last firing
        _stalled = False        # a request incomplete, or a response's writing blocked, at the last firing
        _timer = None
        _peer_certificate = None
        # httptools sets no bound on headers: the bytes received while a request's head is
        # incomplete are counted, and past MAX_HEADER_BYTES the request is refused (431) as soon
        # as no response is being written on the connection.  A head that ends within the read
        # that crosses the bound is served (the parser does not say where in the read it ended),
        # so the bound is MAX_HEADER_BYTES plus at most one read, as Go's is approximate too.
        _head_bytes = 0
        _in_head = True
        _oversized = False
        _begun = False          # a request's first bytes arrived and it is not yet whole

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._timer = self.loop.call_later(request_timeout, self._check_progress)
            self._peer_certificate = transport.get_extra_info("peercert")

        def connection_lost(self, exc) -> None:
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[PEER_CERTIFICATE] = self._peer_certificate
            self._receiving = self._begun = True
            self._stalled = False       # a new request: whatever stalled before has moved on

        def on_message_complete(self) -> None:
            self._receiving = self._stalled = self._begun = False
            self._in_head = True
            super().on_message_complete()

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._oversized:
                return
            if self._in_head:
                self._head_bytes += len(data)
            # Parsed first: a head that ends in this data resets the count (its request is served).
            super().data_received(data)
            if self._in_head and self._head_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self._oversized = True
                if self.cycle is None or (self.cycle.response_complete and not self.pipeline):
                    self._refuse_oversized_head()
                else:                       # refused once the answers in flight are written
                    self.flow.pause_reading()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._oversized and not self.pipeline and not self.transport.is_closing():
                self._refuse_oversized_head()

        def _answer_before_closing(self, status: HTTPStatus, message: bytes) -> None:
            """An answer written by the protocol itself, to a request the app has not answered."""
            store.count_http_request(_OTHER, status)
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, status.phrase.encode(), len(message), message))

        def _refuse_oversized_head(self) -> None:
            self._answer_before_closing(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                        b"request header fields too large: at most %d bytes" % MAX_HEADER_BYTES)
            # Closed for writing only, and what still comes is read and dropped (data_received), as Go
            # closes: closing with unread data would send a reset, which can destroy the 431 unread.
            # The client closes on reading the end, or the request timeout does.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # A request httptools could not parse: uvicorn answers it, and it is counted like any answer.
            if len(self.url) > MAX_URL_BYTES:
                self._answer_before_closing(HTTPStatus.REQUEST_URI_TOO_LONG,
                                            b"URI too long: at most %d bytes" % MAX_URL_BYTES)
                self.transport.close()
                return
            store.count_http_request(_OTHER, 400)
            super().send_400_response(msg)

        def resume_writing(self) -> None:
            self._drained = True
            super().resume_writing()

        def _check_progress(self) -> None:
            transport = self.transport
            if transport.get_protocol() is not self:        # upgraded
                return
            if transport.is_closing() and not transport.get_write_buffer_size():
                return      # closed, or closing with everything sent (an HTTP/1.0 answer, written whole)
            blocked = False         # paused since the last firing, and the client took nothing of what waits
            if self.flow.write_paused:
                buffered = transport.get_write_buffer_size()
                blocked = not self._drained and buffered >= self._buffered
                self._buffered = buffered
            self._drained = False
            waiting = self._receiving or blocked
            if waiting and self._stalled:
                # The handler reading the body or writing the response sees a disconnect
                # (server._ClientGone, or uvicorn dropping what it sends).  close() would wait to
                # flush what a client that does not read never takes: abort() drops it.
                if self.flow.write_paused:
                    transport.abort()
                    return
                if self._begun and (self.cycle is None or not self.cycle.response_started):
                    # A request begun and not finished is answered (a connection that sent nothing is
                    # closed quietly, as Go's server does), and counted.
                    self._answer_before_closing(HTTPStatus.REQUEST_TIMEOUT, b"request not received whole in time")
                transport.close()
                return
            self._stalled = waiting
            self._timer = self.loop.call_later(request_timeout, self._check_progress)

    return Protocol


def _listen(address: str) -> socket.socket:
    """A listening socket on `address`, bound here rather than by uvicorn, so that a failure is the
    OSError itself ("[Errno 98] Address already in use") rather than uvicorn's exit status 3 after an
    error log line.  It is bound as uvicorn's own Config.bind_socket binds (IPv6 when the host has a colon)."""
    host, port = parse_listen_address(address)
    return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)


# uvicorn's warning for each request its HTTP parser refuses: one line per bad request, with nothing
# to act on, when orchestrator_exporter_http_requests_total{handler="other",code="400"} counts them.
_INVALID_REQUEST = "Invalid HTTP request received."


class _QuietUvicorn(logging.Filter):
    """Drops uvicorn's info-level start-up and shut-down lines made in the threads that run our servers
    ("Started server process", "Application startup complete", ...): our own "Listening on" line says it;
    and its line per request the parser refuses, which a flood of bad requests would write to disk.
    It sits on the shared `uvicorn.error` logger but looks only at records made in those threads, so an
    orchestrator that runs its own uvicorn in the same process logs as it always did; other warnings pass."""

    def __init__(self):
        super().__init__()
        self.threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread not in self.threads:
            return True
        return record.levelno >= logging.WARNING and record.msg != _INVALID_REQUEST

    def run(self, server, sock: socket.socket) -> None:
        """server.run() on `sock` in this thread, quietly; the socket is closed after."""
        logging.getLogger("uvicorn.error").addFilter(self)      # once: addFilter skips one already there
        ident = threading.get_ident()
        self.threads.add(ident)
        try:
            server.run(sockets=[sock])
        finally:
            self.threads.discard(ident)
            sock.close()


_QUIET = _QuietUvicorn()


def _make_server(app: ExporterApp, address: str):
    import uvicorn

    service = app.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Readiness turns 503 at once; uvicorn then stops accepting and waits for in-flight requests.
            if not service.draining:
                service.draining = True
                _log.info("stopped accepting connections; waiting for %d in-flight request(s)",
                          service.in_flight)
            super().handle_exit(sig, frame)

    return Server(_uvicorn_config(app, address))


class ServerHandle:
    """A server running in a background thread: .url, .port (where it serves, or served once
    stopped), .stop()."""

    def __init__(self, app: ExporterApp, address: str):
        self.app = app
        self.service = app.service
        try:
            sock = _listen(address)
        except OSError as exc:
            raise OSError(f"cannot serve on {address}: {exc}") from exc
        self.port: int = sock.getsockname()[1]
        self._server = _make_server(app, address)      # off the main thread, uvicorn leaves signals alone
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sock,), name="agent-exporter-http", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.005)
        if not self._server.started:
            raise OSError(f"cannot serve on {address}: {self._failure or 'the server did not start'}")

    def _run(self, sock: socket.socket) -> None:
        try:
            _QUIET.run(self._server, sock)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of __init__
            self._failure = exc

    @property
    def tls(self) -> bool:
        return self.service.web_config.initial.config.tls is not None

    @property
    def url(self) -> str:
        return _url(self._server.config.host, self.port, self.tls)

    def stop(self, timeout: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting, let in-flight requests finish (up to `timeout`), then return."""
        self._server.config.timeout_graceful_shutdown = timeout    # read by uvicorn when it shuts down
        self._server.handle_exit(None, None)
        self._thread.join(timeout + 5)
        self.app.close()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(service: Service, address: str) -> ServerHandle:
    return ServerHandle(ExporterApp(service), address)


def start_embedded(telemetry, address: str, remediator=None) -> ServerHandle:
    """Telemetry.serve(): the landing page, /metrics, health and the healing endpoints, in a background thread."""
    return start_server(Service.from_config(telemetry, remediator=remediator, ingest=False), address)


def serve(service: Service, address: str, on_started=None) -> None:
    """Serve in the calling (main) thread until SIGTERM, SIGINT or SIGHUP, then drain gracefully.

    uvicorn, which handles the first two, raises SIGTERM or SIGINT again once drained; SIGHUP (its
    terminal closed) is taken as SIGTERM, rather than ending the process with requests unanswered and
    spans unsent.  `on_started(url)` is called once the socket listens.  Raises OSError when it cannot listen.
    """
    sock = _listen(address)
    port = sock.getsockname()[1]
    app = ExporterApp(service)
    server = _make_server(app, address)
    startup = server.startup

    async def startup_then_report(sockets=None) -> None:
        await startup(sockets)
        if server.started and on_started is not None:
            on_started(_url(server.config.host, port, service.web_config.initial.config.tls is not None))

    server.startup = startup_then_report
    hangup = getattr(signal, "SIGHUP", None)       # Windows has none
    if hangup:
        previous = signal.signal(hangup, lambda signum, frame: server.handle_exit(signal.SIGTERM, frame))
    try:
        _QUIET.run(server, sock)
    finally:
        app.close()
        if hangup:
            signal.signal(hangup, previous)
    if not server.started:
        raise OSError(f"cannot serve on {address}")
    _log.info("server stopped (%d request(s) unfinished)", service.cancelled + service.in_flight)


def _url(host: str, port: int, tls: bool) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"
