"""The OTLP/gRPC trace receiver: opentelemetry-proto's TraceService/Export on grpcio.

Requests reach the handler as the bytes received (no deserializer), so gRPC
and OTLP/HTTP share one decoding path (`OTLPReceiver.export_serialized`): a
body that is not an ExportTraceServiceRequest is INVALID_ARGUMENT, rejected
spans come back as a partial success.  grpcio handles compression and the
message size limit (`server.max_body_bytes`).  Plaintext only: listen on
loopback, or put TLS in front (an OpenTelemetry Collector, a proxy).
"""

from __future__ import annotations

import hmac
from concurrent import futures

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
WORKERS = 4


class GrpcReceiverHandle:
    """A running gRPC receiver: `port` it listens on, `stop()` to end it."""

    def __init__(self, server: grpc.Server, port: int):
        self._server = server
        self.port = port

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait()


def start_grpc_receiver(receiver, address: str, *, invalid: type[Exception], max_message_bytes: int,
                        bearer_token: str | None = None) -> GrpcReceiverHandle:
    """Serve `receiver` (an OTLPReceiver) on `address` (HOST:PORT; port 0 picks a free one).

    `invalid` is the exception the receiver raises for a body that is not OTLP (otlp.OTLPDecodeError),
    passed in so that this module does not import the one that imports it."""
    expected = f"Bearer {bearer_token}".encode() if bearer_token else None

    def export(data: bytes, context: grpc.ServicerContext) -> bytes:
        if expected is not None:
            sent = dict(context.invocation_metadata()).get("authorization", "").encode()
            if not hmac.compare_digest(sent, expected):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        try:
            return receiver.export_serialized(data).SerializeToString()
        except invalid as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="otlp-grpc"),
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.so_reuseport", 0)])   # a taken port is an error, not shared
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        port, reason = 0, str(exc)
    else:
        reason = "the address is taken or not local"
    if not port:
        raise OSError(f"otlp.grpc_listen_address: cannot listen on {address}: {reason}")
    server.start()
    return GrpcReceiverHandle(server, port)
