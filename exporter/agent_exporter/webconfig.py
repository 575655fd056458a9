"""The Prometheus exporter-toolkit web configuration file (`--web.config.file`).

Same YAML format as every Prometheus exporter (exporter-toolkit
docs/web-configuration.md): `tls_server_config`, `http_server_config`,
`basic_auth_users` (bcrypt hashes) and `rate_limit`.  Unknown keys and bad
values are errors naming the key path.  Relative file names are relative to
the config file's directory, as in exporter-toolkit.  The file is read at
startup; restart to apply a change.

Where Python's `ssl` module cannot do what Go's crypto/tls does, the option is
refused with an error rather than silently weakened: client certificates are
always verified (so `RequestClientCert` and `RequireAnyClientCert` are refused),
and `curve_preferences` cannot be set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml


class WebConfigError(ValueError):
    """A web config problem; the message starts with the key path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's names (crypto/tls CipherSuites()) of the configurable TLS 1.2 suites, as OpenSSL spells them.
# TLS 1.3 suites are not configurable, in Go as here.
_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}

_CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

# The headers exporter-toolkit lets a config set, with their allowed values (None: any).
_HEADERS = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
# bcrypt of "fakepassword": unknown users cost as much as known ones, so timing
# does not reveal which user names exist (exporter-toolkit does the same).
_FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_CACHE_SIZE = 100

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: str = ""
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class RateLimit:
    interval_seconds: float = 0.0   # 0 disables the limiter
    burst: int = 0


@dataclass(frozen=True)
class WebConfig:
    tls: TLSServerConfig | None = None
    headers: dict[str, str] = field(default_factory=dict)
    http2: bool = True              # accepted for compatibility; this server speaks HTTP/1.1
    basic_auth_users: dict[str, bytes] = field(default_factory=dict)
    rate_limit: RateLimit = field(default_factory=RateLimit)


# -- parsing -----------------------------------------------------------------

def _mapping(value, path: str, allowed: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(path, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise WebConfigError(where, f"unknown key (known: {', '.join(allowed)})")
    return value


def _string(value, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WebConfigError(path, f"expected a string, got {type(value).__name__}")
    return value


def _strings(value, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise WebConfigError(path, f"expected a list of strings, got {type(value).__name__}")
    return tuple(_string(item, f"{path}[{i}]") for i, item in enumerate(value))


def _bool(value, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise WebConfigError(path, f"expected true or false, got {value!r}")
    return value


def parse_duration(text, path: str) -> float:
    """A Go duration ("1s", "250ms", "1m30s") in seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text == 0:
        return 0.0
    if not isinstance(text, str) or not text:
        raise WebConfigError(path, f"expected a duration such as 1s or 250ms, got {text!r}")
    position, seconds = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) and text != "0":
        raise WebConfigError(path, f"expected a duration such as 1s or 250ms, got {text!r}")
    return seconds


def _relative_to(directory: Path, name: str) -> str:
    return str(directory / name) if name and not os.path.isabs(name) else name


def _parse_tls(raw, directory: Path) -> TLSServerConfig | None:
    path = "tls_server_config"
    raw = _mapping(raw, path, (
        "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
        "client_allowed_sans", "min_version", "max_version", "cipher_suites",
        "prefer_server_cipher_suites", "curve_preferences"))
    if "curve_preferences" in raw and raw["curve_preferences"]:
        raise WebConfigError(f"{path}.curve_preferences",
                             "not supported: Python's ssl module cannot set a list of curves")
    values = {key: _string(raw.get(key), f"{path}.{key}") for key in (
        "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file")}
    if not any(values.values()):
        return None   # no TLS settings: plain HTTP, as exporter-toolkit does
    if not values["cert_file"] and not values["cert"]:
        raise WebConfigError(path, "missing one of cert or cert_file")
    if not values["key_file"] and not values["key"]:
        raise WebConfigError(path, "missing one of key or key_file")
    if values["cert_file"] and values["cert"]:
        raise WebConfigError(f"{path}.cert", "set either cert or cert_file, not both")
    if values["key_file"] and values["key"]:
        raise WebConfigError(f"{path}.key", "set either key or key_file, not both")
    client_auth = values["client_auth_type"] or "NoClientCert"
    if client_auth in _UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(f"{path}.client_auth_type",
                             f"{client_auth} is not supported: client certificates are always verified here; "
                             "use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    if client_auth not in _CLIENT_AUTH:
        raise WebConfigError(f"{path}.client_auth_type", f"invalid client auth type {client_auth!r}")
    if (values["client_ca_file"] or values["client_ca"]) and _CLIENT_AUTH[client_auth] == ssl.CERT_NONE:
        raise WebConfigError(f"{path}.client_auth_type",
                             "client CAs have been configured without a client auth policy")
    sans = _strings(raw.get("client_allowed_sans"), f"{path}.client_allowed_sans")
    if sans and client_auth != "RequireAndVerifyClientCert":
        raise WebConfigError(f"{path}.client_allowed_sans",
                             "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert")
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = _string(raw.get(key), f"{path}.{key}") or default
        if version not in _TLS_VERSIONS:
            raise WebConfigError(f"{path}.{key}",
                                 f"unknown TLS version {version!r} (known: {', '.join(_TLS_VERSIONS)})")
        versions[key] = version
    if _TLS_VERSIONS[versions["min_version"]] > _TLS_VERSIONS[versions["max_version"]]:
        raise WebConfigError(f"{path}.min_version", "is above max_version")
    suites = _strings(raw.get("cipher_suites"), f"{path}.cipher_suites")
    for i, suite in enumerate(suites):
        if suite not in _CIPHER_SUITES:
            raise WebConfigError(f"{path}.cipher_suites[{i}]", f"unknown cipher: {suite}")
    return TLSServerConfig(
        cert_file=_relative_to(directory, values["cert_file"]),
        key_file=_relative_to(directory, values["key_file"]),
        cert=values["cert"], key=values["key"],
        client_ca_file=_relative_to(directory, values["client_ca_file"]),
        client_ca=values["client_ca"],
        client_auth_type=client_auth,
        client_allowed_sans=sans,
        min_version=versions["min_version"], max_version=versions["max_version"],
        cipher_suites=suites,
        prefer_server_cipher_suites=_bool(raw.get("prefer_server_cipher_suites"),
                                          f"{path}.prefer_server_cipher_suites", True),
    )


def _parse_http(raw) -> tuple[dict[str, str], bool]:
    path = "http_server_config"
    raw = _mapping(raw, path, ("http2", "headers"))
    headers = {}
    for name, value in _mapping(raw.get("headers"), f"{path}.headers", tuple(_HEADERS)).items():
        value = _string(value, f"{path}.headers.{name}")
        allowed = _HEADERS[name]
        if allowed is not None and value not in allowed:
            raise WebConfigError(f"{path}.headers.{name}",
                                 f"invalid value {value!r}; expected one of {', '.join(allowed)}")
        if value:
            headers[name] = value
    return headers, _bool(raw.get("http2"), f"{path}.http2", True)


def _parse_users(raw) -> dict[str, bytes]:
    path = "basic_auth_users"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise WebConfigError(path, f"expected a mapping of user names to bcrypt hashes, got {type(raw).__name__}")
    users = {}
    for user, hashed in raw.items():
        where = f"{path}.{user}"
        if not isinstance(user, str) or not user:
            raise WebConfigError(where, "user names must be non-empty strings")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            raise WebConfigError(where, "expected a bcrypt hash such as $2y$10$... (htpasswd -nBC 10 \"\")")
        users[user] = hashed.encode("ascii")
    return users


def _parse_rate_limit(raw) -> RateLimit:
    path = "rate_limit"
    raw = _mapping(raw, path, ("interval", "burst"))
    interval = parse_duration(raw.get("interval", 0), f"{path}.interval")
    burst = raw.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise WebConfigError(f"{path}.burst", f"expected a non-negative integer, got {burst!r}")
    if interval > 0 and burst < 1:
        raise WebConfigError(f"{path}.burst", "must be at least 1 when interval is set")
    return RateLimit(interval, burst)


def parse_web_config(document, directory: Path = Path(".")) -> WebConfig:
    raw = _mapping(document, "", ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"))
    headers, http2 = _parse_http(raw.get("http_server_config"))
    return WebConfig(
        tls=_parse_tls(raw.get("tls_server_config"), directory),
        headers=headers,
        http2=http2,
        basic_auth_users=_parse_users(raw.get("basic_auth_users")),
        rate_limit=_parse_rate_limit(raw.get("rate_limit")),
    )


def load_web_config(path) -> WebConfig:
    """Read and validate a web config file; its TLS files are loaded once to check them."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise WebConfigError("", f"cannot read web config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError("", f"invalid YAML in {path}: {exc}") from None
    config = parse_web_config(document, path.parent)
    if config.tls is not None:
        ssl_context(config.tls)
    return config


# -- TLS ---------------------------------------------------------------------

def _load_inline_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """load_cert_chain only takes files: write inline PEM to a private temporary file."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
        os.chmod(handle.name, 0o600)
        handle.write(cert.strip() + "\n" + key.strip() + "\n")
    try:
        context.load_cert_chain(handle.name)
    finally:
        os.unlink(handle.name)


def ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server-side SSLContext for the config; errors name the key path."""
    path = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    try:
        if tls.cert_file and tls.key_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        else:
            cert = tls.cert or Path(tls.cert_file).read_text()
            key = tls.key or Path(tls.key_file).read_text()
            _load_inline_pair(context, cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{path}.cert_file", f"failed to load the certificate and key: {exc}") from None
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    try:
        if tls.client_ca_file:
            context.load_verify_locations(cafile=tls.client_ca_file)
        elif tls.client_ca:
            context.load_verify_locations(cadata=tls.client_ca)
        elif context.verify_mode != ssl.CERT_NONE:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)   # Go verifies against the system roots
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{path}.client_ca_file", f"failed to load the client CA: {exc}") from None
    if tls.cipher_suites:
        context.set_ciphers(":".join(_CIPHER_SUITES[name] for name in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def peer_sans(certificate: dict) -> list[str]:
    """DNS names, IPs, e-mail addresses and URIs of a peer certificate (ssl.getpeercert())."""
    return [value for kind, value in certificate.get("subjectAltName", ())
            if kind in ("DNS", "IP Address", "email", "URI")]


def allowed_peer(tls: TLSServerConfig, certificate: dict | None) -> bool:
    if not tls.client_allowed_sans:
        return True
    return certificate is not None and any(san in tls.client_allowed_sans for san in peer_sans(certificate))


# -- basic auth ----------------------------------------------------------------

class BasicAuth:
    """bcrypt verification of basic_auth_users, cached as exporter-toolkit does.

    bcrypt is slow on purpose (tens of ms at cost 10), so each (user, hash,
    password) outcome is cached; the key is a SHA-256 of the three, so no
    password is kept in memory.  Only one bcrypt runs at a time.
    """

    def __init__(self, users: dict[str, bytes]):
        self._users = dict(users)
        self._cache: dict[bytes, bool] = {}
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    def check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        known = hashed is not None
        if not known:
            hashed = _FAKE_HASH
        secret = password.encode("utf-8", "surrogateescape")
        key = hashlib.sha256(b"\0".join((user.encode("utf-8", "surrogateescape"), hashed, secret))).digest()
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            with self._bcrypt_lock:
                try:
                    cached = bcrypt.checkpw(secret, hashed)
                except ValueError:
                    cached = False
            with self._cache_lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = cached
        return known and cached


class RateLimiter:
    """A token bucket: one token per `interval`, at most `burst` saved up."""

    def __init__(self, limit: RateLimit):
        self._interval = limit.interval_seconds
        self._burst = float(limit.burst)
        self._tokens = self._burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))
