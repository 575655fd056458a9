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
    found = _read(path, setting, env)
    return None if found is None else found[0]


def read_token(path: str | None, setting: str, *, env: str | None = None) -> str | None:
    """read_secret() for a bearer token, which must also be ASCII: an Authorization header
    carries it, read as latin-1 by servers and sent as UTF-8 by clients, so no other could match."""
    found = _read(path, setting, env)
    if found is None:
        return None
    token, where = found
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
    if not secret.isprintable():
        raise ValueError(f"{where} holds a line break or another control character: a secret is one line")
    return secret, where
