"""The Prometheus exporter-toolkit web configuration file (`--web.config.file`).

Same YAML format as every Prometheus exporter (exporter-toolkit
docs/web-configuration.md): `tls_server_config`, `http_server_config`,
`basic_auth_users` (bcrypt hashes) and `rate_limit`, decoded into the
Structs below by validation.decode: unknown keys and bad values are errors
naming the key path, and a key left empty takes its default.  Relative file
names are relative to the config file's directory, as in exporter-toolkit.

The file is re-read when it changes, as exporter-toolkit re-reads it on every
request and every TLS handshake: `WatchedWebConfig.current()` stats the file
and the files it names (cert_file, key_file, client_ca_file), compares their
contents too while a modification time is too recent to tell two writes
apart, and reads them all again when any of them changed, so a certificate
rotated by cert-manager or a user added or revoked applies to the next
connection or request.  A file that became invalid fails closed until it is
fixed (requests get 503, TLS handshakes fail; it is read again on a change, and
every second, as a fix to a directory's permissions shows on no file), logged
at error level once per problem.  What exporter-toolkit builds once at start is
read once here too: the rate limit (its token bucket) and whether the server
speaks TLS at all (a reload that turns TLS on or off is invalid until the next
restart).  Neither may a reload remove every basic_auth_users entry: a file
emptied, or caught half rewritten, would otherwise open what it guarded.

Where Python's `ssl` module cannot do what Go's crypto/tls does, the option is
refused with an error rather than silently weakened: client certificates are
always verified (so `RequestClientCert` and `RequireAnyClientCert` are refused),
and `curve_preferences` cannot be set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import bcrypt
import msgspec
import yaml
from msgspec import Meta, field

from . import durations
from .filewatch import FileWatch
from .validation import REDACTED, Invalid, Section, decode, load_yaml

_log = logging.getLogger(__name__)


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

# bcrypt of "fakepassword": unknown users cost as much as known ones, so timing
# does not reveal which user names exist (exporter-toolkit does the same).
_FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_CACHE_SIZE = 100

UserName = Annotated[str, Meta(min_length=1, description="a non-empty user name")]
BcryptHash = Annotated[str, Meta(pattern=r"^\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}$(?!\n)",
                                 description='a bcrypt hash such as $2y$10$... (htpasswd -nBC 10 "")'), REDACTED]
# Go's form, as exporter-toolkit reads it; a bare 0 (YAML's number) means off too.
Interval = Annotated[Annotated[str, Meta(pattern=durations.GO_PATTERN)] | Literal[0],
                     Meta(description="a duration such as 1s or 250ms, or 0 for off")]


# -- the file, as exporter-toolkit defines its keys -----------------------------------


class TLSServerConfig(Section):
    """tls_server_config; relative file names are made relative to the config file's directory."""
    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: Annotated[str, REDACTED] = ""          # a private key: an error never repeats it
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = ""             # "" is NoClientCert, as in exporter-toolkit
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()  # refused: Python's ssl module cannot set a list of curves

    @property
    def configured(self) -> bool:
        """Whether any TLS setting is made; none means plain HTTP, as in exporter-toolkit."""
        return any((self.cert_file, self.key_file, self.cert, self.key, self.client_ca_file, self.client_ca,
                    self.client_auth_type))

    def __post_init__(self):
        if self.curve_preferences:
            raise Invalid("curve_preferences", "not supported: Python's ssl module cannot set a list of curves")
        if not self.configured:
            return
        if not self.cert_file and not self.cert:
            raise Invalid("", "missing one of cert or cert_file")
        if not self.key_file and not self.key:
            raise Invalid("", "missing one of key or key_file")
        if self.cert_file and self.cert:
            raise Invalid("cert", "set either cert or cert_file, not both")
        if self.key_file and self.key:
            raise Invalid("key", "set either key or key_file, not both")
        if self.client_auth_type in _UNVERIFIED_CLIENT_AUTH:
            raise Invalid("client_auth_type",
                          f"{self.client_auth_type} is not supported: client certificates are always verified "
                          "here; use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
        if self.client_auth_type not in _CLIENT_AUTH:
            raise Invalid("client_auth_type", f"invalid client auth type {self.client_auth_type!r}")
        if (self.client_ca_file or self.client_ca) and _CLIENT_AUTH[self.client_auth_type] == ssl.CERT_NONE:
            raise Invalid("client_auth_type", "client CAs have been configured without a client auth policy")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise Invalid("client_allowed_sans",
                          "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert")
        for key in ("min_version", "max_version"):
            if getattr(self, key) not in _TLS_VERSIONS:
                raise Invalid(key, f"unknown TLS version {getattr(self, key)!r} (known: {', '.join(_TLS_VERSIONS)})")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise Invalid("min_version", "is above max_version")
        for i, suite in enumerate(self.cipher_suites):
            if suite not in _CIPHER_SUITES:
                raise Invalid(f"cipher_suites[{i}]", f"unknown cipher: {suite}")


class Headers(Section):
    """http_server_config.headers: the response headers exporter-toolkit lets a config set."""
    strict_transport_security: str = field(default="", name="Strict-Transport-Security")
    x_content_type_options: Literal["nosniff"] | None = field(default=None, name="X-Content-Type-Options")
    x_frame_options: Literal["deny", "sameorigin"] | None = field(default=None, name="X-Frame-Options")
    x_xss_protection: str = field(default="", name="X-XSS-Protection")
    content_security_policy: str = field(default="", name="Content-Security-Policy")

    def by_name(self) -> dict[str, str]:
        """The headers given a value, by their HTTP names."""
        return {f.encode_name: getattr(self, f.name) for f in msgspec.structs.fields(self) if getattr(self, f.name)}


class HTTPServerConfig(Section):
    http2: bool | None = None
    headers: Headers = field(default_factory=Headers)

    def __post_init__(self):
        # exporter-toolkit offers HTTP/2 over TLS by default; uvicorn speaks HTTP/1.1 only, so
        # asking for HTTP/2 is refused rather than ignored (false or no value is what it does).
        if self.http2:
            raise Invalid("http2", "this exporter serves HTTP/1.1 only; set false or leave the key out")


class RateLimitConfig(Section):
    interval: Interval = 0
    burst: Annotated[int, Meta(ge=0, description="a non-negative integer")] = 0

    def __post_init__(self):
        if self.interval and durations.go_seconds(self.interval) > 0 and self.burst < 1:
            raise Invalid("burst", "must be at least 1 when interval is set")


class WebConfigFile(Section):
    """The web config file (exporter-toolkit docs/web-configuration.md)."""
    tls_server_config: TLSServerConfig = field(default_factory=TLSServerConfig)
    http_server_config: HTTPServerConfig = field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[UserName, BcryptHash] = {}
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)


# -- what the server uses ---------------------------------------------------------------


class RateLimit(msgspec.Struct, frozen=True):
    interval_seconds: float = 0.0   # 0 disables the limiter
    burst: int = 0


class WebConfig(msgspec.Struct, frozen=True):
    tls: TLSServerConfig | None = None
    headers: dict[str, str] = {}
    basic_auth_users: dict[str, bytes] = {}
    rate_limit: RateLimit = field(default_factory=RateLimit)


def parse_duration(text, path: str) -> float:
    """A Go duration ("1s", "250ms", "1m30s", or 0) in seconds; WebConfigError naming `path` otherwise."""
    if text == 0 and not isinstance(text, bool):
        return 0.0
    try:
        return durations.go_seconds(text)
    except ValueError as exc:
        raise WebConfigError(path, str(exc)) from None


def _relative_to(directory: Path, name: str) -> str:
    return str(directory / name) if name and not os.path.isabs(name) else name


def parse_web_config(document, directory: Path = Path(".")) -> WebConfig:
    file = decode({} if document is None else document, WebConfigFile, root="", error=WebConfigError)
    tls = file.tls_server_config
    return WebConfig(
        tls=msgspec.structs.replace(
            tls, cert_file=_relative_to(directory, tls.cert_file), key_file=_relative_to(directory, tls.key_file),
            client_ca_file=_relative_to(directory, tls.client_ca_file),
            client_auth_type=tls.client_auth_type or "NoClientCert") if tls.configured else None,
        headers=file.http_server_config.headers.by_name(),
        basic_auth_users={user: hashed.encode("ascii") for user, hashed in file.basic_auth_users.items()},
        rate_limit=RateLimit(parse_duration(file.rate_limit.interval, "rate_limit.interval"), file.rate_limit.burst),
    )


def read_web_config_file(path: Path) -> WebConfig:
    """Read and validate a web config file, without its TLS files."""
    try:
        document = load_yaml(path.read_bytes())
    except OSError as exc:
        raise WebConfigError("", f"cannot read web config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError("", f"invalid YAML in {path}: {exc}") from None
    return parse_web_config(document, path.parent)


def load_web_config(path) -> WebConfig:
    """Read and validate a web config file; its TLS files are loaded once to check them."""
    return LoadedWebConfig(read_web_config_file(Path(path))).config


# -- TLS ---------------------------------------------------------------------

class TLSFiles(msgspec.Struct, frozen=True):
    """The PEM of a tls_server_config, read once for both TLS stacks: Python's ssl and grpcio's."""
    cert: bytes
    key: bytes
    client_ca: bytes | None     # None when no client CAs are set


def read_tls_files(tls: TLSServerConfig) -> TLSFiles:
    """The certificate chain, the private key and the client CAs as PEM, from their files or given inline;
    errors name the key path."""

    def pem(inline: str, file: str, key: str) -> bytes | None:
        if inline:
            return inline.encode()
        if not file:
            return None
        try:
            return Path(file).read_bytes()
        except OSError as exc:
            raise WebConfigError(f"tls_server_config.{key}", f"cannot read {file}: {exc.strerror}") from None

    return TLSFiles(pem(tls.cert, tls.cert_file, "cert_file"), pem(tls.key, tls.key_file, "key_file"),
                    pem(tls.client_ca, tls.client_ca_file, "client_ca_file"))


def _load_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """load_cert_chain only takes files: the PEM goes through a private temporary file."""
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as handle:
        os.chmod(handle.name, 0o600)
        handle.write(cert.strip() + b"\n" + key.strip() + b"\n")
    try:
        context.load_cert_chain(handle.name)
    finally:
        os.unlink(handle.name)


def ssl_context(tls: TLSServerConfig, files: TLSFiles) -> ssl.SSLContext:
    """A server-side SSLContext for the config and its files (read_tls_files); errors name the key path."""
    path = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    try:
        _load_pair(context, files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{path}.cert_file", f"failed to load the certificate and key: {exc}") from None
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    try:
        if files.client_ca is not None:
            context.load_verify_locations(cadata=files.client_ca.decode("latin-1"))
        elif context.verify_mode != ssl.CERT_NONE:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)   # Go verifies against the system roots
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise WebConfigError(f"{path}.client_ca_file", f"failed to load the client CA: {exc}") from None
    try:
        if tls.cipher_suites:
            context.set_ciphers(":".join(_CIPHER_SUITES[name] for name in tls.cipher_suites))
    except ssl.SSLError as exc:     # none of them offered by this OpenSSL
        raise WebConfigError(f"{path}.cipher_suites", f"cannot use these cipher suites: {exc}") from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])   # what http_server_config.http2: false promises
    return context


def peer_sans(certificate: dict) -> list[str]:
    """DNS names, IPs, e-mail addresses and URIs of a peer certificate (ssl.getpeercert())."""
    return [value for kind, value in certificate.get("subjectAltName", ())
            if kind in ("DNS", "IP Address", "email", "URI")]


def allowed_peer(tls: TLSServerConfig, certificate: dict | None) -> bool:
    if not tls.client_allowed_sans:
        return True
    return certificate is not None and any(san in tls.client_allowed_sans for san in peer_sans(certificate))


# -- the file as it is now ------------------------------------------------------------

class LoadedWebConfig:
    """A valid web config with its TLS files read and its SSLContext built (which checks that the key
    matches the certificate), and the headers every response carries, encoded once: what a request or a
    TLS handshake uses."""

    __slots__ = ("config", "tls_files", "ssl_context", "response_headers")

    def __init__(self, config: WebConfig):
        self.config = config
        self.response_headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                 for name, value in config.headers.items()]
        self.tls_files = read_tls_files(config.tls) if config.tls is not None else None
        self.ssl_context = ssl_context(config.tls, self.tls_files) if config.tls is not None else None


def _named_files(config: WebConfig) -> tuple[Path, ...]:
    tls = config.tls
    if tls is None:
        return ()
    return tuple(Path(name) for name in (tls.cert_file, tls.key_file, tls.client_ca_file) if name)


class WatchedWebConfig:
    """The web config file at `path` as it is now (see the module).

    `current()` costs a stat of each watched file, no more (for 2 s after a change, also a read and
    a hash of each: see filewatch), so it is called once per request, TLS connection or gRPC call
    rather than throttled: a change is seen by the very next one, as in exporter-toolkit, which
    reads the whole file each time.  A file that cannot be read or is invalid
    at start raises WebConfigError from the constructor (the server does not start)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._watch = FileWatch()
        self._error: WebConfigError | None = None
        self.initial = self._loaded = self._load()

    def current(self) -> LoadedWebConfig:
        """The config as its files are now; WebConfigError while they are invalid."""
        with self._lock:
            if self._watch.changed(failing=self._error is not None):
                self._reload()
            if self._error is not None:
                # A new exception each time: one raised again and again would keep every traceback.
                raise WebConfigError("", f"the web config {self.path} is invalid: {self._error}")
            return self._loaded

    def _load(self) -> LoadedWebConfig:
        """Read the file and the files it names, each watched from before it is read, so that a change
        made while reading shows at the next check."""
        self._watch.restart()
        self._watch.add(self.path)
        config = read_web_config_file(self.path)
        self._watch.add(*_named_files(config))
        return LoadedWebConfig(config)

    def _reload(self) -> None:
        try:
            loaded = self._load()
            self._require_as_at_start(loaded.config)
        except WebConfigError as exc:
            if str(exc) != str(self._error):        # once per problem, not per retry
                _log.error("the web config %s is invalid, so requests are refused until it is fixed: %s",
                           self.path, exc)
            self._error = exc
            return
        self._loaded, self._error = loaded, None
        _log.info("reloaded the web config %s", self.path)
        if loaded.config.rate_limit != self.initial.config.rate_limit:
            _log.warning("the web config %s changed rate_limit, which applies at the next restart "
                         "(as in exporter-toolkit)", self.path)

    def _require_as_at_start(self, config: WebConfig) -> None:
        # The listener speaks TLS or not from the start; serving plain HTTP where the file asks for TLS,
        # or the reverse, would be a connection other than the one the file describes.
        started_with_tls = self.initial.config.tls is not None
        if (config.tls is not None) != started_with_tls:
            raise WebConfigError("tls_server_config", f"TLS was {'on' if started_with_tls else 'off'} at start; "
                                                      "turning it on or off takes a restart")
        # A file emptied, or caught half rewritten by a tool that truncates first, must not open
        # everything it guarded: users may change, but removing them all takes a restart.
        if self.initial.config.basic_auth_users and not config.basic_auth_users:
            raise WebConfigError("basic_auth_users", "there were users at start; removing them all (turning "
                                                     "basic auth off) takes a restart")


class FixedWebConfig:
    """No web config file: the defaults (plain HTTP, no users), never re-read."""

    def __init__(self):
        self.initial = LoadedWebConfig(WebConfig())

    def current(self) -> LoadedWebConfig:
        return self.initial


# -- basic auth ----------------------------------------------------------------

class BasicAuth:
    """bcrypt verification of basic_auth_users, cached as exporter-toolkit does.

    bcrypt is slow on purpose (tens of ms at cost 10), so each (user, hash,
    password) outcome is cached; the key is a SHA-256 of the three, so no
    password is kept in memory, and a cached outcome stays right when the
    users change (a new hash is a new key).  Only one bcrypt runs at a time.
    The users are passed on each check: those of the web config at that moment.
    """

    def __init__(self):
        self._cache: dict[bytes, bool] = {}
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def check_credentials(self, users: dict[str, bytes], credentials: str) -> bool:
        """The credentials of an `Authorization: Basic <credentials>` header (base64 of user:password)."""
        parsed = _user_and_password(credentials)
        return parsed is not None and self.check(users, *parsed)

    def cached_outcome(self, users: dict[str, bytes], credentials: str) -> bool | None:
        """check_credentials()'s answer when it needs no bcrypt (malformed or cached), else None:
        for a server to answer known credentials without waiting behind bcrypt runs."""
        parsed = _user_and_password(credentials)
        if parsed is None:
            return False
        known, _, _, cached = self._lookup(users, *parsed)
        return None if cached is None else known and cached

    def check(self, users: dict[str, bytes], user: str, password: str) -> bool:
        known, hashed, key, cached = self._lookup(users, user, password)
        if cached is None:
            with self._bcrypt_lock:
                try:
                    cached = bcrypt.checkpw(password.encode("utf-8", "surrogateescape"), hashed)
                except ValueError:
                    cached = False
            with self._cache_lock:
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = cached
        return known and cached

    def _lookup(self, users: dict[str, bytes], user: str, password: str) -> tuple[bool, bytes, bytes, bool | None]:
        """Whether the user is known, the hash to check against (a fake one for an unknown user, so
        both take as long), its cache key, and the cached outcome or None."""
        hashed = users.get(user)
        known = hashed is not None
        if not known:
            hashed = _FAKE_HASH
        key = _cache_key(user, hashed, password)
        with self._cache_lock:
            return known, hashed, key, self._cache.get(key)


def _user_and_password(credentials: str) -> tuple[str, str] | None:
    """(user, password) of basic auth's base64 credentials; None when they are not that."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _cache_key(user: str, hashed: bytes, password: str) -> bytes:
    return hashlib.sha256(b"\0".join((user.encode("utf-8", "surrogateescape"), hashed,
                                      password.encode("utf-8", "surrogateescape")))).digest()


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
