"""Alertmanager's two views of an alert, as msgspec Structs: the webhook payload and the v2 API.

The webhook (version 4) pushes notifications to /v1/alertmanager; GET
/api/v2/alerts is what the fleet's poller reads.  Both carry the alert's
fingerprint, the same hash of its label set in either (and on every member of
a cluster), so the two sources name one alert alike.  Unknown fields are
ignored; a missing or mistyped field is a ValueError naming its path
(`payload.alerts[1].fingerprint: ...`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from ..events import MALFORMED_JSON, malformed_json_reason

WEBHOOK_VERSION = "4"

Status = Literal["firing", "resolved"]
Fingerprint = Annotated[str, msgspec.Meta(min_length=1)]
Labels = dict[str, str]


class WebhookAlert(msgspec.Struct, frozen=True):
    status: Status
    labels: Labels
    annotations: Labels
    startsAt: str
    endsAt: str
    fingerprint: Fingerprint
    generatorURL: str = ""


class WebhookPayload(msgspec.Struct, frozen=True):
    version: str
    receiver: str
    status: Status
    alerts: list[WebhookAlert]
    groupLabels: Labels = {}
    commonLabels: Labels = {}
    commonAnnotations: Labels = {}
    externalURL: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0


class APIAlert(msgspec.Struct, frozen=True):
    """One entry of GET /api/v2/alerts (a gettableAlert), the fields the poller reads."""
    labels: Labels
    fingerprint: Fingerprint


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")


def _error(exc: msgspec.ValidationError, root: str) -> ValueError:
    """msgspec's error as `root.path: message`, the way config and event errors read."""
    match = _AT.match(str(exc))
    path = root + (match["path"] or "")
    message = match["message"]
    missing = _MISSING.match(message)
    if missing:
        return ValueError(f"{path}: missing field {missing[1]!r}")
    return ValueError(f"{path}: {message[:1].lower()}{message[1:]}")


def decode_webhook(payload) -> WebhookPayload:
    """An Alertmanager webhook payload (version 4) from the request body's bytes, or from an object
    already parsed from JSON; a decoded payload passes through.  ValueError names the problem."""
    if isinstance(payload, WebhookPayload):
        return payload
    try:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            decoded = msgspec.json.decode(payload, type=WebhookPayload)
        else:
            decoded = msgspec.convert(payload, WebhookPayload)
    except msgspec.ValidationError as exc:
        raise _error(exc, "payload") from None
    except MALFORMED_JSON as exc:       # not JSON, not UTF-8, or nested too deeply: as /v1/events says it
        raise ValueError(f"payload: {malformed_json_reason(exc, payload)}") from None
    if decoded.version != WEBHOOK_VERSION:
        raise ValueError(f"payload.version: unsupported webhook version {decoded.version!r} "
                         f"(expected {WEBHOOK_VERSION!r})")
    for i, alert in enumerate(decoded.alerts):
        if "alertname" not in alert.labels:
            raise ValueError(f"payload.alerts[{i}].labels: missing alertname")
    return decoded


def decode_api_alerts(body: bytes) -> list[APIAlert]:
    """The body of GET /api/v2/alerts, or ValueError naming the problem."""
    try:
        alerts = msgspec.json.decode(body, type=list[APIAlert])
    except msgspec.ValidationError as exc:
        raise _error(exc, "alerts") from None
    except MALFORMED_JSON as exc:
        raise ValueError(f"alerts: {malformed_json_reason(exc, body)}") from None
    for i, alert in enumerate(alerts):
        if "alertname" not in alert.labels:
            raise ValueError(f"alerts[{i}].labels: missing alertname")
    return alerts


def alerts_filter(alert_names) -> str:
    """The API's `filter` matcher selecting these alert names (Alertmanager anchors the regex)."""
    return 'alertname=~"' + "|".join(re.escape(name) for name in sorted(alert_names)) + '"'


def label_matchers(labels: dict[str, str]) -> list[str]:
    """Equality matchers for these labels, as Alertmanager's filters and PromQL selectors write
    them (config.LabelValue holds no quote, backslash or newline to escape)."""
    return [f'{name}="{value}"' for name, value in sorted(labels.items())]
