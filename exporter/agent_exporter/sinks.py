"""Local stand-ins for Slack and an SMTP server, so alert delivery can be watched and tested.

`SlackSink` takes Slack incoming-webhook posts; `SMTPSink` (aiosmtpd) takes
mail.  Both listen on 127.0.0.1, keep what they received, and call an optional
`on_message` for each message (the demo prints them); `SlackSink.fail_next`
plays a Slack outage for the delivery tests.  This module needs the `demo`
extra (`pip install 'agent-exporter[demo]'`); the library never imports it.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from .ports import free_port


class SlackSink:
    """A Slack incoming-webhook endpoint: POSTed JSON bodies land in `.messages`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_message=None):
        self.messages: list[dict] = []
        self._on_message = on_message
        self._failures: list[int] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    status = sink._failures.pop(0) if sink._failures else HTTPStatus.OK
                    if status == HTTPStatus.OK:
                        try:
                            message = json.loads(body)
                        except ValueError:
                            status = HTTPStatus.BAD_REQUEST     # as Slack answers "invalid_payload"
                        else:
                            sink.messages.append(message)
                if status == HTTPStatus.OK and sink._on_message is not None:
                    sink._on_message(message)
                reply = {HTTPStatus.OK: b"ok", HTTPStatus.BAD_REQUEST: b"invalid_payload"}.get(status, b"unavailable")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-sink", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/services/demo"

    def fail_next(self, n: int, status: int = HTTPStatus.INTERNAL_SERVER_ERROR) -> None:
        """Answer the next `n` posts with `status` (a Slack outage), then accept again."""
        with self._lock:
            self._failures.extend([status] * n)

    @property
    def failures_pending(self) -> int:
        """Outage answers not given yet."""
        with self._lock:
            return len(self._failures)

    def start(self) -> "SlackSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Collector:
    def __init__(self, sink: "SMTPSink"):
        self._sink = sink

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self._sink._received(message)
        return "250 OK"


class SMTPSink:
    """An SMTP server that accepts every message into `.messages`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_message=None):
        self.messages: list[email.message.EmailMessage] = []
        self._on_message = on_message
        self._lock = threading.Lock()
        # aiosmtpd's Controller needs a concrete port to probe its own readiness.
        self._controller = Controller(_Collector(self), hostname=host, port=port or free_port(host))

    @property
    def port(self) -> int:
        return self._controller.port

    @property
    def host(self) -> str:
        return self._controller.hostname

    def _received(self, message) -> None:
        with self._lock:
            self.messages.append(message)
        if self._on_message is not None:
            self._on_message(message)

    def start(self) -> "SMTPSink":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def format_slack_line(body: dict) -> str:
    """One line for a Slack message: its text, or its first attachment's title and text."""
    parts = []
    for attachment in body.get("attachments") or ():
        parts += [attachment.get("title") or "", attachment.get("text") or ""]
    parts.append(body.get("text") or "")
    return " | ".join(" ".join(p.split()) for p in parts if p and p.strip())


def format_email_line(message) -> str:
    """One line for an email: recipients and subject."""
    return f"to={message.get('To', '')} subject={' '.join(str(message.get('Subject', '')).split())}"
