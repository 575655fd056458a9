"""GET requests to an API that one or several members serve (a Prometheus, an Alertmanager cluster).

get() asks the members in turn, starting with the one that answered last, and
returns the first answer; get_each() asks every member and returns every
answer.  Either fails only when no member answers.  Credentials
(healing.fleet.*.auth) are a bearer token or basic auth, read from their files
on every request so rotated secrets are picked up.
"""

from __future__ import annotations

import base64
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from ..credentials import read_secret, read_token


class SourceUnavailable(Exception):
    """No member answered; the message names each member and why."""


# Alertmanager's remediation alerts and Prometheus's per-agent statistics are small; anything this big is not them.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024


class APIClient:
    """GET `path` from the first member of `urls` that answers 2xx; the body as bytes.

    `auth` is a config.HTTPAuthConfig, `key_path` its place in the config (for
    errors); `timeout` bounds each request: its connection, its headers and, from its start, its
    whole answer (checked between reads, so a request ends within twice `timeout`).
    """

    def __init__(self, urls: Sequence[str], *, auth, key_path: str, timeout: float):
        if not urls:
            raise ValueError(f"{key_path}: no URL to poll")
        self.urls = [url.rstrip("/") for url in urls]
        self.auth = auth
        self.key_path = key_path
        self.timeout = timeout
        self._first = 0
        self._authorization()      # an unreadable secret is a start-up error, not a failing poll

    def _authorization(self) -> str | None:
        auth = self.auth
        if auth.bearer_token_file:
            return "Bearer " + read_token(auth.bearer_token_file, f"{self.key_path}.auth.bearer_token_file")
        if auth.username:
            password = read_secret(auth.password_file, f"{self.key_path}.auth.password_file")
            return "Basic " + base64.b64encode(f"{auth.username}:{password}".encode()).decode("ascii")
        return None

    def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> bytes:
        """The first answer, asking the member that answered last first."""
        headers, query = self._request(params)
        errors = []
        n = len(self.urls)
        for i in (self._first + k for k in range(n)):
            try:
                body = self._fetch(self.urls[i % n], path, query, headers)
            except _Failed as failed:
                errors.append(str(failed))
            else:
                self._first = i % n
                return body
        raise SourceUnavailable("; ".join(errors))

    def get_each(self, path: str, params: Sequence[tuple[str, str]] = ()) -> list[bytes]:
        """Every member's answer (those that answer)."""
        headers, query = self._request(params)
        bodies, errors = [], []
        for url in self.urls:
            try:
                bodies.append(self._fetch(url, path, query, headers))
            except _Failed as failed:
                errors.append(str(failed))
        if not bodies:
            raise SourceUnavailable("; ".join(errors))
        return bodies

    def _request(self, params) -> tuple[dict, str]:
        headers = {"Accept": "application/json"}
        try:
            authorization = self._authorization()
        except ValueError as exc:
            raise SourceUnavailable(str(exc)) from None
        if authorization:
            headers["Authorization"] = authorization
        return headers, urllib.parse.urlencode(list(params))

    def _fetch(self, url: str, path: str, query: str, headers: dict) -> bytes:
        request = urllib.request.Request(f"{url}{path}?{query}" if query else url + path, headers=headers)
        # urlopen's timeout bounds each socket operation, not the answer: a member that sends a byte
        # a second would hold the poller (and start()) forever while its source still looked up.
        deadline = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = bytearray()
                while chunk := response.read1(_READ_SIZE):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise _Failed(f"{url}: an answer over {MAX_ANSWER_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise _Failed(f"{url}: no whole answer within {self.timeout:g}s")
                return bytes(body)
        except urllib.error.HTTPError as exc:
            raise _Failed(f"{url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Failed(f"{url}: {getattr(exc, 'reason', exc)}") from None


class _Failed(Exception):
    """One member did not answer."""
