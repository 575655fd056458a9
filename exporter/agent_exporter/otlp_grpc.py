"""The OTLP/gRPC trace receiver: opentelemetry-proto's TraceService/Export on grpcio.

Requests reach the handler as the bytes received (no deserializer), so gRPC
and OTLP/HTTP share one decoding path (`OTLPReceiver.export_serialized`): a
body that is not an ExportTraceServiceRequest is INVALID_ARGUMENT, rejected
spans come back as a partial success.  grpcio handles compression and the
message size limit (`server.max_body_bytes`).  Plaintext only: listen on
loopback, or put TLS in front (an OpenTelemetry Collector, a proxy).

The server is grpcio's asyncio one, on an event loop of its own: a request
arrives on the loop, and only a whole one takes a worker thread to be mapped.
(grpcio's threaded server gave each call a worker before its request had
arrived, so a few clients that start a call and send nothing held every
worker, and every other call waited for them.)
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from concurrent import futures

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
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
    (server.parse_listen_address); grpcio takes no empty host."""
    return "0.0.0.0" + address if address.startswith(":") else address


class _Authorization(grpc.aio.ServerInterceptor):
    """Calls without the credentials the HTTP service asks of /v1/traces end UNAUTHENTICATED before
    their request is read: `authorization: Bearer <token>` when a bearer token is set, `Basic
    <user:password>` when the web config has basic_auth_users; either one when both are.

    The scheme is case-insensitive (RFC 7235), as on the HTTP service."""

    def __init__(self, token: str | None, basic_auth):
        self._token = token.encode() if token else None
        self._basic_auth = basic_auth
        # Request-streaming, so that grpcio does not wait for the request before the call is refused.
        self._deny = grpc.stream_unary_rpc_method_handler(self._abort)

    @staticmethod
    async def _abort(requests, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "valid credentials are required")

    async def intercept_service(self, continuation, handler_call_details):
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        scheme, _, credentials = sent.partition(" ")
        scheme = scheme.lower()
        if self._token is not None and scheme == "bearer" and hmac.compare_digest(
                credentials.strip().encode(), self._token):
            return await continuation(handler_call_details)
        # bcrypt takes tens of milliseconds on purpose: off the event loop.
        if self._basic_auth is not None and scheme == "basic" and await asyncio.get_running_loop().run_in_executor(
                None, self._basic_auth.check_credentials, credentials):
            return await continuation(handler_call_details)
        return self._deny


def start_grpc_receiver(receiver, address: str, *, invalid: type[Exception], max_message_bytes: int,
                        bearer_token: str | None = None, basic_auth=None) -> GrpcReceiverHandle:
    """Serve `receiver` (an OTLPReceiver) on `address` (HOST:PORT, or :PORT for every interface; port 0
    picks a free one), taking messages of up to `max_message_bytes` (at most MAX_MESSAGE_BYTES).

    `bearer_token` and `basic_auth` (a webconfig.BasicAuth) guard it as they guard /v1/traces.
    `invalid` is the exception the receiver raises for a body that is not OTLP (otlp.OTLPDecodeError),
    passed in so that this module does not import the one that imports it."""

    def export(data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return receiver.export_serialized(data).SerializeToString()
        except invalid as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def serve(workers: futures.ThreadPoolExecutor) -> tuple[grpc.aio.Server, int]:
        # A synchronous handler on the asyncio server runs on `workers` (grpcio's migration thread pool).
        interceptors = [_Authorization(bearer_token, basic_auth)] if bearer_token or basic_auth else None
        server = grpc.aio.server(workers, interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", min(max_message_bytes, MAX_MESSAGE_BYTES)),
            ("grpc.so_reuseport", 0)])      # a taken port is an error, not shared
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
        try:
            port = server.add_insecure_port(bind_address(address))
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
