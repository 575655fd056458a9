"""Reading a secret (a bearer token, a password): one place, one precedence.

A secret comes from an environment variable or from a file holding it.  When
both are given, the environment wins: a deployment (a container's environment,
a systemd credential) overrides a file named in a config or on a command line
without editing either.  Surrounding whitespace is stripped (files end with a
newline).  A file that is named but unreadable or empty is an error naming the
setting that names it, never an empty secret; so is one of several lines or with
control characters, which no header could carry, and no error repeats a secret.

Users: the service's /v1/* token (server.bearer_token_file, read again when
the file changes, or AGENT_EXPORTER_BEARER_TOKEN: `bearer_token()`),
`agent-exporter replay --bearer-token-file` (the same variable), and the
healing layer's API credentials (healing.fleet.*.auth, files only, read again
on every request).  Rotated secrets are thus picked up without a restart, as
Alertmanager and Prometheus read their credentials files on each request.
"""

from __future__ import annotations

import logging
import os
import threading

from .filewatch import FileWatch

BEARER_TOKEN_ENV = "AGENT_EXPORTER_BEARER_TOKEN"

_log = logging.getLogger(__name__)


def read_secret(path: str | None, setting: str, *, env: str | None = None) -> str | None:
    """The secret: `$env` when set and not blank, else the content of the file `path`, else None.

    ValueError naming `setting` (the config key or flag that names the file) when
    the file cannot be read or is empty."""
    found = _read(path, setting, env)
    return None if found is None else found[0]


def read_token(path: str | None, setting: str, *, env: str | None = None) -> str | None:
    """read_secret() for a bearer token, which must also be ASCII: an Authorization header
    carries it, read as latin-1 by servers and sent as UTF-8 by clients, so no other could match."""
    found = _read(path, setting, env)
    return None if found is None else _ascii(*found)


class FixedToken:
    """A bearer token given once: in code, or in the environment."""

    def __init__(self, token: str):
        self._token = token

    def current(self) -> str:
        return self._token


class TokenFile:
    """The bearer token in the file `path`, read again when the file changes (a stat per call, see
    filewatch): writing a new token, or a Kubernetes secret volume swapping it, rotates it without a
    restart, as Alertmanager reads the same file (its credentials_file) on each notification.

    A file that cannot be read or is invalid at start raises ValueError from the constructor.  One
    that becomes so fails closed, `current()` raising ValueError until it is fixed (it is read again
    on a change, and every second), logged at error level once per problem."""

    def __init__(self, path: str, setting: str):
        self.path = path
        self._setting = setting
        self._lock = threading.Lock()
        self._watch = FileWatch()
        self._error: ValueError | None = None
        self._token = self._read()

    def current(self) -> str:
        with self._lock:
            if self._watch.changed(failing=self._error is not None):
                try:
                    token = self._read()
                except ValueError as exc:
                    if str(exc) != str(self._error):        # once per problem, not per retry
                        _log.error("the bearer token cannot be read, so requests that send one are refused "
                                   "until it is fixed: %s", exc)
                    self._error = exc
                else:
                    self._token, self._error = token, None
                    _log.info("read the bearer token again from %s", self.path)
            if self._error is not None:
                raise ValueError(str(self._error))
            return self._token

    def _read(self) -> str:
        self._watch.restart()
        self._watch.add(self.path)      # before reading: a write made meanwhile shows at the next call
        return _ascii(*_read(self.path, self._setting, None))


def bearer_token(path: str | None, setting: str, *, env: str | None = None) -> FixedToken | TokenFile | None:
    """The token read_token() reads, as a FixedToken from `$env`, else as a TokenFile, else None."""
    if in_environment(env):
        return FixedToken(read_token(None, setting, env=env))
    return TokenFile(path, setting) if path else None


def in_environment(env: str | None) -> bool:
    """Whether the variable `env` gives a secret, which then wins over any file (see the module)."""
    return bool(env and os.environ.get(env, "").strip())


def given_token(token) -> FixedToken | TokenFile | None:
    """A bearer token given in code: a string (checked as a file's would be), a FixedToken or
    TokenFile, or None for no token.  ValueError for an empty one, which would let every request in,
    and for one no Authorization header could carry, naming `bearer_token` and never the token."""
    if token is None or isinstance(token, (FixedToken, TokenFile)):
        return token
    if not isinstance(token, str) or not token or token != token.strip():
        raise ValueError("bearer_token: expected a non-empty string without surrounding whitespace "
                         "(None for no token)")
    return FixedToken(_ascii(_one_line(token, "bearer_token"), "bearer_token"))


def _ascii(token: str, where: str) -> str:
    if not token.isascii():
        raise ValueError(f"{where}: a bearer token is ASCII, as an Authorization header carries it")
    return token


def _read(path: str | None, setting: str, env: str | None) -> tuple[str, str] | None:
    """(the secret, where it came from for an error), or None when neither source gives one.
    A secret with a line break or another control character inside is a ValueError, never
    repeating it: no header could carry it, and a two-line file is most often two secrets."""
    secret = os.environ.get(env, "").strip() if env else ""
    where = env
    if not secret:
        if not path:
            return None
        where = f"{setting}: {path}"
        try:
            with open(path, encoding="utf-8") as handle:
                secret = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise ValueError(f"{setting}: cannot read {path}: {why}") from None
        if not secret:
            raise ValueError(f"{setting}: {path} is empty")
    return _one_line(secret, where), where


def _one_line(secret: str, where: str) -> str:
    if not secret.isprintable():
        raise ValueError(f"{where} holds a line break or another control character: a secret is one line")
    return secret
