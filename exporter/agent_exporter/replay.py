"""`agent-exporter replay FILE --url URL`: send an event log or a legacy metrics file to an exporter.

Three kinds of file:
  * a JSONL event log (one schema-v1 event or legacy record per line), sent in
    NDJSON batches;
  * a JSON array of events;
  * a legacy metrics JSON as the old collector's save_metrics() wrote it
    (`summary` + `detailed_metrics`).  Its executions are rebuilt as legacy
    records: one per recorded latency, successes and failures as counted, and
    each agent's tokens and cost spread over its executions so that the totals
    the exporter ends up with equal the file's exactly.  Files written by
    agent_exporter.compat also carry the records themselves
    (`agent_executions`), which are then sent as they are.

The exporter validates; rejected events are reported with their line (JSONL)
or position, and a batch refused as too large is split and sent again.
"""

from __future__ import annotations

import base64
import http.client
import io
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import msgspec

NDJSON = "application/x-ndjson"
EVENTS_PATH = "/v1/events"
_encode = msgspec.json.Encoder().encode


class ReplayError(RuntimeError):
    """The replay cannot go on (bad file, refused credentials, exporter unreachable)."""


@dataclass
class Rejected:
    where: str       # "line 12" or "record 7"
    error: str


@dataclass
class Unlisted:
    """Rejections of one request that the exporter counted but did not list."""
    where: str       # "line 1 to line 1500"
    count: int
    listed: int      # how many of the request's rejections the exporter listed


@dataclass
class ReplaySummary:
    sent: int = 0
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    unlisted: list[Unlisted] = field(default_factory=list)
    requests: int = 0
    source: str = ""          # "jsonl", "json array" or "legacy metrics"

    @property
    def rejected_count(self) -> int:
        return len(self.rejected) + sum(part.count for part in self.unlisted)


# -- reading files -----------------------------------------------------------

@dataclass
class _Item:
    where: str
    line: bytes              # one JSON document, no newline


def _spread_integer(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + 1 if i < extra else base for i in range(n)]


def _spread_cost(total: float, n: int) -> list[float]:
    """n shares whose left-to-right float sum is exactly `total`.

    All but the last share are total/n; the last is what remains.  The partial
    sum is within a factor of two of `total` (n >= 2), so by Sterbenz' lemma the
    subtraction is exact and the exporter's running sum lands on `total`.
    """
    if n == 1:
        return [total]
    if total == 0:
        return [0.0] * n
    share = total / n
    partial = 0
    for _ in range(n - 1):
        partial += share
    return [share] * (n - 1) + [total - partial]


def legacy_records(document: dict) -> list[dict]:
    """Legacy collector records equivalent to a save_metrics() document."""
    records = document.get("agent_executions")
    if isinstance(records, list):
        return records
    detailed = document.get("detailed_metrics")
    if not isinstance(detailed, dict):
        raise ReplayError("detailed_metrics: missing; not a legacy metrics file")
    sections = {}
    for key in ("latencies", "token_usage", "costs", "success_counts", "failure_counts"):
        value = detailed.get(key, {})
        if not isinstance(value, dict):
            raise ReplayError(f"detailed_metrics.{key}: expected an object keyed by agent")
        sections[key] = value
    out = []
    agents = sorted(set().union(*(section.keys() for section in sections.values())))
    for agent in agents:
        latencies = sections["latencies"].get(agent, [])
        successes = sections["success_counts"].get(agent, 0)
        failures = sections["failure_counts"].get(agent, 0)
        tokens = sections["token_usage"].get(agent, 0)
        cost = sections["costs"].get(agent, 0.0)
        n = len(latencies)
        if successes + failures != n:
            raise ReplayError(f"detailed_metrics.latencies.{agent}: {n} latencies but "
                              f"{successes} successes + {failures} failures")
        if n == 0:
            if tokens or cost:
                raise ReplayError(f"detailed_metrics.token_usage.{agent}: usage without executions")
            continue
        token_shares = _spread_integer(int(tokens), n)
        cost_shares = _spread_cost(float(cost), n)
        for i, duration_ms in enumerate(latencies):
            out.append({
                "agent_name": agent,
                "duration_ms": duration_ms,
                "success": i < successes,   # the file keeps counts, not which run failed
                "tokens_used": token_shares[i],
                "cost": cost_shares[i],
            })
    return out


def _file_kind(path: Path) -> tuple[str, object]:
    """('jsonl', None) or ('json array' | 'legacy metrics', parsed document)."""
    with open(path, "rb") as handle:
        first_line = handle.readline()
    stripped = first_line.strip()
    if stripped.startswith(b"["):
        return "json array", _decode_file(path)
    if stripped.startswith(b"{"):
        try:
            first = msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            first = None       # an object spread over several lines: a whole-file document
        if isinstance(first, dict) and "detailed_metrics" not in first:
            return "jsonl", None
        document = first if first is not None else _decode_file(path)
        if isinstance(document, dict) and "detailed_metrics" in document:
            return "legacy metrics", document
        raise ReplayError(f"{path}: a JSON object that is not a legacy metrics file (no detailed_metrics)")
    if not stripped:
        raise ReplayError(f"{path}: empty first line; expected JSONL, a JSON array or a legacy metrics file")
    return "jsonl", None


def _decode_file(path: Path):
    try:
        return msgspec.json.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise ReplayError(f"{path}: invalid JSON: {exc}") from None


def _items(path: Path, kind: str, document) -> Iterator[tuple[_Item, int]]:
    """(item, bytes of the file consumed so far) in file order."""
    if kind == "jsonl":
        consumed = 0
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                consumed += len(line)
                line = line.strip()
                if line:
                    yield _Item(f"line {number}", line), consumed
        return
    records = legacy_records(document) if kind == "legacy metrics" else document
    size = path.stat().st_size
    for i, record in enumerate(records):
        yield _Item(f"record {i}", _encode(record)), size * (i + 1) // max(len(records), 1)


# -- progress ------------------------------------------------------------------

class Progress:
    """A one-line progress bar on a terminal; silent otherwise (logs stay clean)."""

    def __init__(self, total_bytes: int, stream=None, *, label: str = "replay"):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty() and total_bytes > 0
        self.total = total_bytes
        self.label = label
        self._last = 0.0

    def update(self, done_bytes: int, events: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        fraction = min(done_bytes / self.total, 1.0)
        bar = "#" * int(fraction * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {fraction:4.0%} {events:,} events")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# -- sending -------------------------------------------------------------------

class _Client:
    """One keep-alive connection to the exporter, reopened once if the server closed it."""

    def __init__(self, url: str, *, bearer_token: str | None, basic_auth: tuple[str, str] | None,
                 ca_file: str | None, timeout: float):
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:          # a port past 65535, or not a number
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ReplayError(f"--url {redacted(url)!r}: expected http(s)://HOST:PORT")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, port
        self._timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        self._path = parts.path.rstrip("/") + EVENTS_PATH if parts.path.rstrip("/") != EVENTS_PATH else EVENTS_PATH
        self._headers = {"Content-Type": NDJSON}
        given = [name for name, value in (("a bearer token (--bearer-token-file or $AGENT_EXPORTER_BEARER_TOKEN)",
                                           bearer_token), ("--username", basic_auth),
                                          ("a user in --url", parts.username is not None)) if value]
        if len(given) > 1:
            raise ReplayError(f"{' and '.join(given)}: give one credential")
        if parts.username is not None:
            # Percent-encoded in the URL, as RFC 3986 wants a user or password holding : @ / # ? or %.
            basic_auth = unquote(parts.username), unquote(parts.password or "")
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        elif basic_auth:
            user, password = basic_auth
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._connection = None

    def _connect(self):
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request("POST", self._path, body=body, headers=self._headers)
                response = self._connection.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A keep-alive connection the server has since closed: try once on a fresh one.
                self.close()
                if attempt == 2:
                    raise ReplayError(f"exporter closed the connection: {exc}") from None
            except OSError as exc:
                self.close()
                raise ReplayError(f"cannot reach the exporter at {self._host}:{self._port}: {exc}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _send(client: _Client, batch: list[_Item], summary: ReplaySummary) -> None:
    status, data = client.post(b"\n".join(item.line for item in batch) + b"\n")
    summary.requests += 1
    if status == 413 and len(batch) > 1:
        half = len(batch) // 2
        _send(client, batch[:half], summary)
        _send(client, batch[half:], summary)
        return
    if status == 413:
        summary.sent += 1
        summary.rejected.append(Rejected(batch[0].where, "event is larger than the exporter's body limit"))
        return
    if status in (200, 400):
        try:
            answer = msgspec.json.decode(data)
            rejected = answer["rejected"]
            accepted = answer["accepted"]
        except (msgspec.DecodeError, KeyError, TypeError):
            raise ReplayError(f"exporter answered {status}: {data[:200].decode(errors='replace')}") from None
        summary.sent += len(batch)
        summary.accepted += accepted
        for entry in rejected:
            summary.rejected.append(Rejected(batch[entry["index"]].where, entry["error"]))
        if answer.get("rejected_omitted"):
            summary.unlisted.append(Unlisted(f"{batch[0].where} to {batch[-1].where}", answer["rejected_omitted"],
                                             len(rejected)))
        return
    message = data[:300].decode(errors="replace").strip()
    raise ReplayError(f"exporter answered {status}: {message}")


def replay(path, url: str, *, batch_size: int = 1000, bearer_token: str | None = None,
           basic_auth: tuple[str, str] | None = None, ca_file: str | None = None, timeout: float = 30.0,
           progress_stream=None) -> ReplaySummary:
    """Send the events of the file at `path` to the exporter at `url`, `batch_size` to a request, with
    `bearer_token`, or `basic_auth` (user, password), or the user:password@ of `url`: one of them."""
    path = Path(path)
    if batch_size < 1:
        raise ReplayError("--batch-size must be at least 1")
    try:
        kind, document = _file_kind(path)
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror}") from None
    summary = ReplaySummary(source=kind)
    client = _Client(url, bearer_token=bearer_token, basic_auth=basic_auth, ca_file=ca_file, timeout=timeout)
    progress = Progress(path.stat().st_size, progress_stream)
    batch: list[_Item] = []
    consumed = 0
    try:
        for item, consumed in _items(path, kind, document):
            batch.append(item)
            if len(batch) >= batch_size:
                _send(client, batch, summary)
                batch = []
                progress.update(consumed, summary.sent)
        if batch:
            _send(client, batch, summary)
        progress.update(consumed, summary.sent, force=True)
    finally:
        progress.close()
        client.close()
    return summary


def redacted(url: str) -> str:
    """`url` with the password of its user:password@ (basic auth) shown as ***, for output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}").geturl()


def format_summary(summary: ReplaySummary, url: str, *, show: int = 10) -> str:
    out = io.StringIO()
    out.write(f"replayed {summary.sent:,} events ({summary.source}) to {redacted(url)} in {summary.requests:,} "
              f"request(s): {summary.accepted:,} accepted, {summary.rejected_count:,} rejected\n")
    for rejection in summary.rejected[:show]:
        out.write(f"  {rejection.where}: {rejection.error}\n")
    if len(summary.rejected) > show:
        out.write(f"  ... and {len(summary.rejected) - show:,} more\n")
    for part in summary.unlisted:
        out.write(f"  {part.where}: {part.count:,} more rejected, not listed (the exporter lists the first "
                  f"{part.listed:,} of a request; --batch-size {part.listed} lists them all)\n")
    return out.getvalue()
