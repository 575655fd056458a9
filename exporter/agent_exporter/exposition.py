"""Rendering store snapshots: Prometheus text 0.0.4, OpenMetrics 1.0, and prometheus_client families.

Label sets arrive pre-formatted from the store, so rendering is string joins
and number formatting.  OpenMetrics output carries the `trace_id` exemplar of
each histogram bucket.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

from . import catalog

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_INF = math.inf


def escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_float(value: float) -> str:
    """Go's float formatting, as Prometheus writes numbers (and `le` bounds)."""
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if value != value:
        return "NaN"
    try:
        text = repr(float(value))
    except OverflowError:           # an int beyond float's range; the store never holds one
        return "+Inf" if value > 0 else "-Inf"
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponent notation sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _bucket_suffixes(bounds: tuple[float, ...], lead: str) -> list[str]:
    """`le="…"} ` endings for each bucket of a series; `lead` joins them to the other labels."""
    return [f'{lead}le="{format_float(b)}"}} ' for b in bounds] + [f'{lead}le="+Inf"}} ']


def _braced(text: str) -> str:
    return "{" + text + "}" if text else ""


# Series rendered per chunk: the exposition is a sequence of chunks, so the service streams a
# scrape of 100k series without ever holding the whole text, or a string per line.
_CHUNK = 2048


def _histogram_chunks(snap, openmetrics: bool) -> Iterator[bytes]:
    name = snap.spec.name
    bucket = name + "_bucket{"
    sum_name, count_name = name + "_sum", name + "_count"
    with_labels = _bucket_suffixes(snap.bounds, ",")
    without_labels = _bucket_suffixes(snap.bounds, "")
    rows = list(zip(snap.label_texts, snap.counts, snap.sums, snap.exemplars))
    for start in range(0, len(rows), _CHUNK // 16):
        lines: list[str] = []
        append = lines.append
        for labels, counts, total, exemplars in rows[start:start + _CHUNK // 16]:
            suffixes = with_labels if labels else without_labels
            cumulative = 0
            for b, count in enumerate(counts):
                cumulative += count
                line = f"{bucket}{labels}{suffixes[b]}{cumulative}.0"
                if openmetrics and exemplars is not None and exemplars[b] is not None:
                    trace_id, value, ts = exemplars[b]
                    line += f' # {{trace_id="{trace_id}"}} {format_float(value)} {ts:.3f}'
                append(line)
            braced = _braced(labels)
            append(f"{sum_name}{braced} {format_float(total)}")
            append(f"{count_name}{braced} {cumulative}.0")
        append("")
        yield "\n".join(lines).encode()


def _scalar_chunks(snap) -> Iterator[bytes]:
    name = snap.spec.name
    texts, values = snap.label_texts, snap.values
    for start in range(0, len(texts), _CHUNK):
        yield "".join(
            f"{name}{{{labels}}} {format_float(value)}\n" if labels else f"{name} {format_float(value)}\n"
            for labels, value in zip(texts[start:start + _CHUNK], values[start:start + _CHUNK])).encode()


def _openmetrics_type(spec: catalog.MetricSpec) -> tuple[str, str]:
    """(family name, type) in OpenMetrics terms: counters drop `_total`, `*_info` gauges are info."""
    if spec.type == catalog.GAUGE and spec.name.endswith("_info"):
        return spec.name[: -len("_info")], "info"
    return spec.family, spec.type


EOF = b"# EOF\n"


def chunks(snapshot: list, openmetrics: bool = False) -> Iterator[bytes]:
    """Text 0.0.4, or OpenMetrics 1.0 with trace_id exemplars on histogram buckets, in chunks;
    the last chunk of OpenMetrics is EOF alone."""
    for snap in snapshot:
        spec = snap.spec
        if not snap.label_texts:
            continue
        family, kind = _openmetrics_type(spec) if openmetrics else (spec.name, spec.type)
        yield f"# HELP {family} {_escape_help(spec.help)}\n# TYPE {family} {kind}\n".encode()
        if spec.type == catalog.HISTOGRAM:
            yield from _histogram_chunks(snap, openmetrics)
        else:
            yield from _scalar_chunks(snap)
    if openmetrics:
        yield EOF


def _weights(header: str) -> dict[str, float]:
    """Each value an Accept or Accept-Encoding header lists (lower-cased, parameters dropped) -> its
    q-value (RFC 9110, 12.4.2), the highest where it is listed twice; a q that is not in [0, 1] is 0."""
    weights: dict[str, float] = {}
    for element in header.split(","):
        name, *params = element.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:         # also NaN
                    q = 0.0
        name = name.strip().lower()
        weights[name] = max(q, weights.get(name, 0.0))
    return weights


def negotiate(accept: str | None) -> tuple[bool, str]:
    """(openmetrics?, content type) for an Accept header: OpenMetrics when it is acceptable (q > 0) and
    weighed at least as high as text/plain; otherwise the text format (the default; wildcards change nothing)."""
    # A scrape that never asks costs a search; media types are case-insensitive (RFC 9110, 8.3.1).
    if accept and "application/openmetrics-text" in accept.lower():
        weights = _weights(accept)
        q = weights.get("application/openmetrics-text", 0.0)
        if q > 0.0 and q >= weights.get("text/plain", 0.0):
            return True, OPENMETRICS_CONTENT_TYPE
    return False, TEXT_CONTENT_TYPE


def accepts_gzip(accept_encoding: str | None) -> bool:
    """gzip when Accept-Encoding lists it (or x-gzip, its equivalent: RFC 9110, 8.4.1.3) as acceptable
    (q > 0) and weighs it at least as high as identity."""
    if not accept_encoding or "gzip" not in accept_encoding.lower():
        return False
    weights = _weights(accept_encoding)
    q = max(weights.get("gzip", 0.0), weights.get("x-gzip", 0.0))
    return q > 0.0 and q >= weights.get("identity", 0.0)


# Level 1: scrapes are frequent and the text compresses well even at the fastest level.
GZIP_LEVEL = 1


def gzipped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """A gzip stream of `pieces`, compressed as they come."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for piece in pieces:
        if out := compressor.compress(piece):
            yield out
    yield compressor.flush()


def metric_family(spec: catalog.MetricSpec, label_names=()):
    """The prometheus_client family of `spec`, without samples."""
    from prometheus_client.core import (
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily)

    names = list(label_names)
    if spec.type == catalog.HISTOGRAM:
        return HistogramMetricFamily(spec.name, spec.help, labels=names)
    if spec.type == catalog.COUNTER:
        return CounterMetricFamily(spec.name, spec.help, labels=names)
    if spec.name.endswith("_info"):
        return InfoMetricFamily(spec.name[: -len("_info")], spec.help, labels=names)
    return GaugeMetricFamily(spec.name, spec.help, labels=names)


def to_metric_families(snapshot: list):
    """prometheus_client metric families for a snapshot, for use in any CollectorRegistry."""
    from prometheus_client.samples import Exemplar

    for snap in snapshot:
        spec = snap.spec
        if not snap.label_texts:
            continue
        family = metric_family(spec, snap.label_names)
        if spec.type == catalog.HISTOGRAM:
            les = [format_float(b) for b in snap.bounds] + ["+Inf"]
            for values, counts, total, exemplars in zip(snap.label_values, snap.counts, snap.sums, snap.exemplars):
                buckets, cumulative = [], 0
                for b, count in enumerate(counts):
                    cumulative += count
                    if exemplars is not None and exemplars[b] is not None:
                        trace_id, value, ts = exemplars[b]
                        buckets.append((les[b], cumulative, Exemplar({"trace_id": trace_id}, value, ts)))
                    else:
                        buckets.append((les[b], cumulative))
                family.add_metric(list(values), buckets, total)
        elif spec.name.endswith("_info"):
            for values in snap.label_values:
                family.add_metric(list(values), {})
        else:
            for values, value in zip(snap.label_values, snap.values):
                family.add_metric(list(values), value)
        yield family
