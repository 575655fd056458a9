"""The OTLP/gRPC trace receiver: opentelemetry-proto's TraceService/Export on grpcio.

Requests reach the handler as the bytes received (no deserializer), so gRPC
and OTLP/HTTP share one decoding path (`OTLPReceiver.export_serialized`): a
body that is not an ExportTraceServiceRequest is INVALID_ARGUMENT, rejected
spans come back as a partial success.  grpcio handles compression and the
message size limit (`server.max_body_bytes`).

The web config guards it as it guards /v1/traces: credentials and the rate
limit (one token bucket with the HTTP service) before the request is read,
and new calls are UNAVAILABLE once the HTTP service drains;
and TLS from its tls_server_config, as on the HTTP service.  The web config is
read as it is now (webconfig.WatchedWebConfig), as the HTTP service reads it:
basic_auth_users and client_allowed_sans on each call, and the certificate,
key and client CAs on each new connection, through grpcio's
dynamic_ssl_server_credentials, whose fetcher grpc core calls before each
handshake (returning None keeps the certificates it has).

grpcio's credentials can enforce less than Python's ssl module: grpc core
negotiates TLS 1.2 to 1.3 with its own cipher list, and either asks for no
client certificate or requires one that the client CAs verify, which is
chosen when the server starts.  A setting it cannot enforce (another
min_version or max_version, cipher_suites, VerifyClientCertIfGiven, client
certificates verified against the system roots) makes the receiver refuse to
start, naming the key, rather than take credentials over a weaker connection
than the config promises.  When a reload brings one in (or changes
client_auth_type), or the file becomes invalid, the receiver fails closed:
grpc core cannot refuse a handshake from the fetcher (an error keeps the old
certificates too), so every call is UNAVAILABLE, which OTLP exporters retry,
until the file is fixed; the reason is logged at error level once per change.
client_allowed_sans is checked on each call, from the SANs grpc core puts in
the call's auth context.

The server is grpcio's asyncio one, on an event loop of its own: a request
arrives on the loop, and only a whole one takes a worker thread to be mapped.
(grpcio's threaded server gave each call a worker before its request had
arrived, so a few clients that start a call and send nothing held every
worker, and every other call waited for them.)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import NoReturn

import grpc

from .credentials import FixedToken, TokenFile, given_token
from .server import parse_listen_address
from .webconfig import BasicAuth, LoadedWebConfig, TLSServerConfig, WatchedWebConfig, WebConfigError

_log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EXPORT_METHOD = f"/{SERVICE}/Export"
# The `method` label of a call to any other method: a client names whatever method it likes.
OTHER_METHOD = "other"
WORKERS = 4
# grpcio takes channel arguments as C ints; a protobuf message is below 2 GiB anyway.
MAX_MESSAGE_BYTES = 2**31 - 1


class GrpcReceiverHandle:
    """A running gRPC receiver: `port` it listens on, `stop()` to end it."""

    def __init__(self, server: grpc.aio.Server, port: int, loop: asyncio.AbstractEventLoop,
                 loop_thread: threading.Thread, workers: futures.ThreadPoolExecutor):
        self._server = server
        self.port = port
        self._loop = loop
        self._loop_thread = loop_thread
        self._workers = workers

    def stop(self, grace: float = 1.0) -> None:
        """Refuse new calls, give those under way `grace` seconds, then end the loop and the workers
        (a mapping under way finishes first, so that nothing is recorded after the receiver closes)."""
        asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result()
        _end_loop(self._loop, self._loop_thread)
        self._workers.shutdown(wait=True)


def _end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def bind_address(address: str) -> str:
    """The address grpcio binds for a listen address: :PORT is every interface, as for the HTTP service
    (server.parse_listen_address, which also refuses a port past 65535: grpcio would bind its
    remainder); grpcio takes no empty host."""
    parse_listen_address(address)
    return "0.0.0.0" + address if address.startswith(":") else address


# What grpc core negotiates for ssl_server_credentials (grpc_ssl_server_config: TLS 1.2 to 1.3).
GRPC_TLS_VERSIONS = {"min_version": "TLS12", "max_version": "TLS13"}
# The auth context properties grpc core fills from the client certificate's SANs (grpc_security_constants.h),
# the kinds webconfig.peer_sans reads on the HTTP side.
_SAN_PROPERTIES = ("peer_dns", "peer_ip", "peer_email", "peer_uri")


def _unenforceable(loaded: LoadedWebConfig, at_start: TLSServerConfig) -> WebConfigError | None:
    """Why grpcio cannot serve the TLS `loaded` asks for, when it started with `at_start` (see the module);
    None when it can."""
    tls = loaded.config.tls

    def refused(key: str, reason: str) -> WebConfigError:
        return WebConfigError(f"tls_server_config.{key}", f"the OTLP/gRPC receiver cannot enforce this: {reason}; "
                                                          "change it or leave otlp.grpc_listen_address unset")

    for key, version in GRPC_TLS_VERSIONS.items():
        if getattr(tls, key) != version:
            return refused(key, f"grpc core negotiates TLS 1.2 to 1.3 and cannot be limited, so {key} must be {version}")
    if tls.cipher_suites:
        return refused("cipher_suites", "grpc core uses its own cipher suites")
    # prefer_server_cipher_suites is not refused: Go has ignored it since 1.18, so exporter-toolkit's
    # own servers do not enforce it either.
    if tls.client_auth_type == "VerifyClientCertIfGiven":
        # cygrpc's server_credentials_ssl asks for no certificate unless one is required.
        return refused("client_auth_type", "grpcio either asks for no client certificate or requires one "
                                           "(RequireAndVerifyClientCert)")
    if tls.client_auth_type == "RequireAndVerifyClientCert" and loaded.tls_files.client_ca is None:
        return refused("client_ca_file", "grpcio verifies client certificates against the CAs given to it, not "
                                         "the system roots: set client_ca_file or client_ca")
    if tls.client_auth_type != at_start.client_auth_type:
        return refused("client_auth_type", f"grpcio sets whether it requires a client certificate when it starts "
                                           f"({at_start.client_auth_type} then); restart to change it")
    return None


class _EnforceableWebConfig:
    """The web config as the receiver may use it: the current one, unless it is invalid or grpcio cannot
    enforce its TLS settings; then WebConfigError, the reason logged once per change of the file."""

    def __init__(self, web_config: WatchedWebConfig):
        self._web_config = web_config
        self.tls_at_start = web_config.initial.config.tls
        self._lock = threading.Lock()
        self._checked = web_config.initial
        self._refusal = self._refusal_of(web_config.initial)
        if self._refusal is not None:
            raise self._refusal

    def current(self) -> LoadedWebConfig:
        loaded = self._web_config.current()
        with self._lock:
            if loaded is not self._checked:
                self._checked, self._refusal = loaded, self._refusal_of(loaded)
                if self._refusal is not None:
                    _log.error("the web config %s: %s; OTLP/gRPC calls are refused until it changes",
                               self._web_config.path, self._refusal)
            if self._refusal is not None:
                raise WebConfigError("", str(self._refusal))
        return loaded

    def _refusal_of(self, loaded: LoadedWebConfig) -> WebConfigError | None:
        return _unenforceable(loaded, self.tls_at_start) if self.tls_at_start is not None else None


def _certificate_configuration(loaded: LoadedWebConfig) -> grpc.ServerCertificateConfiguration:
    files = loaded.tls_files
    return grpc.ssl_server_certificate_configuration([(files.key, files.cert)], root_certificates=files.client_ca)


class _CertificateFetcher:
    """grpcio's certificate_configuration_fetcher: grpc core calls it before each new connection's handshake.
    It answers the certificates of a config not handed over yet, or None (keep those it has): also while
    the config is refused, as grpc core would keep them anyway (the calls are refused instead)."""

    def __init__(self, web_config: _EnforceableWebConfig, initial: LoadedWebConfig):
        self._web_config = web_config
        self._given = initial

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            loaded = self._web_config.current()
        except WebConfigError:
            return None
        if loaded is self._given:
            return None
        self._given = loaded
        return _certificate_configuration(loaded)


def server_credentials(web_config: _EnforceableWebConfig, initial: LoadedWebConfig) -> grpc.ServerCredentials:
    """grpcio's credentials for the web config's TLS, re-read for each new connection."""
    return grpc.dynamic_ssl_server_credentials(
        _certificate_configuration(initial), _CertificateFetcher(web_config, initial),
        require_client_authentication=initial.config.tls.client_auth_type == "RequireAndVerifyClientCert")


def _allowed_peer(web_config: _EnforceableWebConfig, context: grpc.ServicerContext) -> bool:
    """Whether the call's client certificate has a SAN client_allowed_sans lists (when it lists any);
    not while the web config is refused (the interceptor has refused the call already, unless the file
    changed since)."""
    try:
        allowed = web_config.current().config.tls.client_allowed_sans
    except WebConfigError:
        return False
    return not allowed or not set(allowed).isdisjoint(peer_sans(context.auth_context()))


def peer_sans(auth_context: dict) -> list[str]:
    """DNS names, IPs, e-mail addresses and URIs of the client certificate of a call (context.auth_context())."""
    return [value.decode("utf-8", "replace") for name in _SAN_PROPERTIES for value in auth_context.get(name, ())]


class _Admission(grpc.aio.ServerInterceptor):
    """What the HTTP service checks of a request before reading it, in the same order, for calls that
    end before their request is read: whether the service drains (UNAVAILABLE, which OTLP clients retry,
    elsewhere or later, as a load balancer sends them elsewhere once readiness is 503); the web config's
    rate limit (RESOURCE_EXHAUSTED, as HTTP's 429), one token bucket for both listeners; then the
    credentials /v1/traces asks for (UNAUTHENTICATED):
    `authorization: Bearer <token>` when a bearer token is set, `Basic <user:password>` when the web
    config has basic_auth_users, either one when both are.  Between the drain and the rate limit, as
    exporter-toolkit reads its file before its limiter: while the web config is refused (see the
    module), UNAVAILABLE; so is a call sending a bearer token while the token's file cannot be read.

    The scheme is case-insensitive (RFC 7235), as on the HTTP service."""

    def __init__(self, token: FixedToken | TokenFile | None, basic_auth: BasicAuth,
                 web_config: _EnforceableWebConfig | None, rate_limiter, draining, count: Callable[[str, str], None]):
        self._token = token
        self._basic_auth = basic_auth
        self._web_config = web_config
        self._rate_limiter = rate_limiter
        self._draining = draining
        self._count = count
        self._unauthenticated = _Refusal(grpc.StatusCode.UNAUTHENTICATED, "valid credentials are required")
        self._exhausted = _Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded")
        self._unavailable = _Refusal(grpc.StatusCode.UNAVAILABLE, "the exporter is shutting down")
        self._misconfigured = _Refusal(grpc.StatusCode.UNAVAILABLE,
                                       "the exporter's web config is invalid; see the exporter's log")
        self._no_token = _Refusal(grpc.StatusCode.UNAVAILABLE,
                                  "the exporter cannot read its bearer token; see the exporter's log")

    async def intercept_service(self, continuation, handler_call_details):
        """The call's handler, or one that refuses it; every refusal is counted here, an answered call by
        its handler."""
        method = handler_call_details.method if handler_call_details.method == EXPORT_METHOD else OTHER_METHOD
        refusal = await self._refusal(handler_call_details)
        if refusal is not None:
            self._count(method, refusal.code.name)
            # As the HTTP service says of its 4xx and 5xx: the client hears why, the operator can at debug.
            _log.debug("%s answered %s: %s", method, refusal.code.name, refusal.message)
            return refusal.handler
        handler = await continuation(handler_call_details)
        if handler is None:     # no such method: grpcio answers UNIMPLEMENTED
            self._count(method, grpc.StatusCode.UNIMPLEMENTED.name)
        return handler

    async def _refusal(self, handler_call_details) -> _Refusal | None:
        if self._draining is not None and self._draining():
            return self._unavailable
        try:
            users = self._web_config.current().config.basic_auth_users if self._web_config is not None else {}
        except WebConfigError:
            return self._misconfigured
        if self._rate_limiter is not None and not self._rate_limiter.allow():
            return self._exhausted
        if self._token is None and not users:
            return None
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        scheme, _, credentials = sent.partition(" ")
        scheme = scheme.lower()
        if self._token is not None and scheme == "bearer":
            try:
                token = self._token.current()
            except ValueError:      # the file became unreadable or invalid: logged once, by current()
                return self._no_token
            if hmac.compare_digest(credentials.strip().encode(), token.encode()):
                return None
        # bcrypt takes tens of milliseconds on purpose: off the event loop.
        if users and scheme == "basic" and await asyncio.get_running_loop().run_in_executor(
                None, self._basic_auth.check_credentials, users, credentials):
            return None
        return self._unauthenticated


class _Refusal:
    """A call refused before its request is read: its status code and the handler that answers it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        async def refuse(requests, context: grpc.aio.ServicerContext) -> None:
            await context.abort(code, message)
        self.code = code
        self.message = message
        # Request-streaming, so that grpcio does not wait for the request before the call is refused.
        self.handler = grpc.stream_unary_rpc_method_handler(refuse)


def start_grpc_receiver(receiver, address: str, *, store, invalid: type[Exception], max_message_bytes: int,
                        bearer_token: str | FixedToken | TokenFile | None = None, basic_auth=None,
                        rate_limiter=None,
                        draining: Callable[[], bool] | None = None,
                        web_config: WatchedWebConfig | None = None) -> GrpcReceiverHandle:
    """Serve `receiver` (an OTLPReceiver) on `address` (HOST:PORT, or :PORT for every interface; port 0
    picks a free one), taking messages of up to `max_message_bytes` (at most MAX_MESSAGE_BYTES).

    `web_config` (a webconfig.WatchedWebConfig, re-read as it changes): its basic_auth_users, checked
    by `basic_auth` (the HTTP service's webconfig.BasicAuth, one cache for both), `bearer_token` (a
    string, or the HTTP service's credentials.TokenFile, re-read as it changes) and `rate_limiter` (the
    HTTP service's webconfig.RateLimiter, shared) guard it as they guard /v1/traces; while `draining()`
    is true (the HTTP service's graceful drain) new calls are UNAVAILABLE; when its tls_server_config
    is set at start it serves TLS only, or raises WebConfigError (see the module).
    Every call it answers is counted in `store`'s orchestrator_exporter_grpc_requests_total by method
    and status code, but those grpc core ends before they reach the server's code (a message over the
    size limit, a failed handshake).
    `invalid` is the exception the receiver raises for a body that is not OTLP (otlp.OTLPDecodeError),
    passed in so that this module does not import the one that imports it."""
    token = given_token(bearer_token)
    enforced = _EnforceableWebConfig(web_config) if web_config is not None else None
    serves_tls = enforced is not None and enforced.tls_at_start is not None
    credentials = server_credentials(enforced, web_config.initial) if serves_tls else None
    # client_allowed_sans needs RequireAndVerifyClientCert, which a reload cannot change here (see the module).
    checks_sans = serves_tls and enforced.tls_at_start.client_auth_type == "RequireAndVerifyClientCert"

    def export(data: bytes, context: grpc.ServicerContext) -> bytes:
        # On each call, with the config of the moment: grpcio gives no hook at the handshake.
        if checks_sans and not _allowed_peer(enforced, context):
            answer(context, grpc.StatusCode.PERMISSION_DENIED, "the client certificate has no allowed SAN")
        try:
            response = receiver.export_serialized(data).SerializeToString()
        except invalid as exc:
            answer(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:  # noqa: BLE001 - a fault is an INTERNAL answer, logged and counted, as HTTP's 500
            _log.error("%s failed", EXPORT_METHOD, exc_info=True)
            answer(context, grpc.StatusCode.INTERNAL, "internal error; see the exporter's log")
        store.count_grpc_request(EXPORT_METHOD, grpc.StatusCode.OK.name)
        return response

    def answer(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
        store.count_grpc_request(EXPORT_METHOD, code.name)
        context.abort(code, message)

    async def serve(workers: futures.ThreadPoolExecutor) -> tuple[grpc.aio.Server, int]:
        # A synchronous handler on the asyncio server runs on `workers` (grpcio's migration thread pool).
        admission = _Admission(token, basic_auth or BasicAuth(), enforced, rate_limiter, draining,
                               store.count_grpc_request)
        # No stream limit, keepalive or connection age, as in the OpenTelemetry Collector's otlp receiver
        # (its default gRPC config sets only a read buffer size): a call that stalls holds no worker (see
        # the module), and grpc core drops a connection whose TLS handshake stalls after 120 s
        # (grpc.server_handshake_timeout_ms).
        server = grpc.aio.server(workers, interceptors=[admission], options=[
            ("grpc.max_receive_message_length", min(max_message_bytes, MAX_MESSAGE_BYTES)),
            ("grpc.so_reuseport", 0)])      # a taken port is an error, not shared
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
        try:
            port = (server.add_secure_port(bind_address(address), credentials) if credentials is not None
                    else server.add_insecure_port(bind_address(address)))
        except RuntimeError as exc:
            port, reason = 0, str(exc)
        else:
            reason = "the address is taken or not local"
        if not port:
            raise OSError(f"otlp.grpc_listen_address: cannot listen on {address}: {reason}")
        await server.start()
        return server, port

    workers = futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="otlp-grpc")
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="otlp-grpc-loop", daemon=True)
    loop_thread.start()
    try:
        server, port = asyncio.run_coroutine_threadsafe(serve(workers), loop).result()
    except BaseException:
        _end_loop(loop, loop_thread)
        workers.shutdown(wait=False)
        raise
    return GrpcReceiverHandle(server, port, loop, loop_thread, workers)
