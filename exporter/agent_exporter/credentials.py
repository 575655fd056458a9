"""Reading a secret (a bearer token, a password): one place, one precedence.

A secret comes from an environment variable or from a file holding it.  When
both are given, the environment wins: a deployment (a container's environment,
a systemd credential) overrides a file named in a config or on a command line
without editing either.  Surrounding whitespace is stripped (files end with a
newline).  A file that is named but unreadable or empty is an error naming the
setting that names it, never an empty secret; so is one of several lines or with
control characters, which no header could carry, and no error repeats a secret.

Users: the service's /v1/* token (server.bearer_token_file, or
AGENT_EXPORTER_BEARER_TOKEN), `agent-exporter replay --bearer-token-file` (the
same variable), and the healing layer's API credentials (healing.fleet.*.auth,
files only, read again on every request so rotated secrets are picked up).
"""

from __future__ import annotations

import os

BEARER_TOKEN_ENV = "AGENT_EXPORTER_BEARER_TOKEN"


def read_secret(path: str | None, setting: str, *, env: str | None = None) -> str | None:
    """The secret: `$env` when set and not blank, else the content of the file `path`, else None.

    ValueError naming `setting` (the config key or flag that names the file) when
    the file cannot be read or is empty."""
    if env:
        value = os.environ.get(env, "").strip()
        if value:
            return _one_line(value, env)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ValueError(f"{setting}: cannot read {path}: {why}") from None
    if not secret:
        raise ValueError(f"{setting}: {path} is empty")
    return _one_line(secret, f"{setting}: {path}")


def read_token(path: str | None, setting: str, *, env: str | None = None) -> str | None:
    """read_secret() for a bearer token, which must also be ASCII: an Authorization header
    carries it, read as latin-1 by servers and sent as UTF-8 by clients, so no other could match."""
    token = read_secret(path, setting, env=env)
    if token is not None and not token.isascii():
        where = env if env and os.environ.get(env, "").strip() else f"{setting}: {path}"
        raise ValueError(f"{where}: a bearer token is ASCII, as an Authorization header carries it")
    return token


def _one_line(secret: str, where: str) -> str:
    """The secret, or ValueError (never repeating it): one with a line break or another control
    character inside could not go in a header, and a two-line file is most often two secrets."""
    if not secret.isprintable():
        raise ValueError(f"{where} holds a line break or another control character: a secret is one line")
    return secret
