"""The exporter-toolkit web config: parsing with key paths, TLS contexts, cached bcrypt basic auth, and
re-reading the file and the files it names as they change."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from types import SimpleNamespace

import bcrypt
import pytest

from agent_exporter import filewatch, webconfig
from agent_exporter.webconfig import (
    BasicAuth, RateLimit, RateLimiter, WatchedWebConfig, WebConfigError, load_web_config, parse_duration,
    parse_web_config,
)

from certificates import self_signed

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def error_of(document) -> WebConfigError:
    with pytest.raises(WebConfigError) as info:
        parse_web_config(document)
    return info.value


def test_an_empty_file_means_plain_http_and_no_auth(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("")
    config = load_web_config(path)
    assert config.tls is None
    assert config.basic_auth_users == {}


def test_tls_file_names_are_relative_to_the_config_file(tmp_path):
    config = parse_web_config({"tls_server_config": {"cert_file": "a.crt", "key_file": "/abs/a.key"}}, tmp_path)
    assert config.tls.cert_file == str(tmp_path / "a.crt")
    assert config.tls.key_file == "/abs/a.key"
    assert (config.tls.min_version, config.tls.max_version) == ("TLS12", "TLS13")


@pytest.mark.parametrize("document, path, text", [
    ({"tls_server_config": {"cert_fil": "x"}}, "tls_server_config.cert_fil", "unknown key"),
    ({"tls_server_config": {"cert_file": "x"}}, "tls_server_config", "missing one of key or key_file"),
    ({"tls_server_config": {"key_file": "x"}}, "tls_server_config", "missing one of cert or cert_file"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "min_version": "TLS14"}},
     "tls_server_config.min_version", "unknown TLS version"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "min_version": "TLS13", "max_version": "TLS12"}},
     "tls_server_config.min_version", "above max_version"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "client_auth_type": "RequireAnyClientCert"}},
     "tls_server_config.client_auth_type", "always verified"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "client_auth_type": "Sometimes"}},
     "tls_server_config.client_auth_type", "invalid client auth type"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "client_ca_file": "ca.crt"}},
     "tls_server_config.client_auth_type", "without a client auth policy"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "client_allowed_sans": ["a"]}},
     "tls_server_config.client_allowed_sans", "RequireAndVerifyClientCert"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "cipher_suites": ["TLS_FAST"]}},
     "tls_server_config.cipher_suites[0]", "unknown cipher"),
    ({"tls_server_config": {"cert_file": "x", "key_file": "y", "curve_preferences": ["X25519"]}},
     "tls_server_config.curve_preferences", "not supported"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
     "http_server_config.headers.X-Frame-Options", "expected one of deny, sameorigin"),
    ({"http_server_config": {"headers": {"Server": "nginx"}}}, "http_server_config.headers.Server", "unknown key"),
    ({"http_server_config": {"http2": "yes"}}, "http_server_config.http2", "true or false"),
    ({"http_server_config": {"http2": True}}, "http_server_config.http2", "HTTP/1.1 only"),
    ({"basic_auth_users": {"alice": "plaintext"}}, "basic_auth_users.alice", "bcrypt hash"),
    ({"basic_auth_users": ["alice"]}, "basic_auth_users", "mapping"),
    ({"rate_limit": {"interval": "soon", "burst": 1}}, "rate_limit.interval", "duration"),
    ({"rate_limit": {"interval": "1s", "burst": 0}}, "rate_limit.burst", "at least 1"),
    ({"tls_config": {}}, "tls_config", "unknown key"),
])
def test_errors_name_the_key_path(document, path, text):
    error = error_of(document)
    assert error.path == path
    assert text in str(error)
    assert str(error).startswith(path)


@pytest.mark.parametrize("document", [
    {"basic_auth_users": {"alice": "PLAINSECRET"}},
    {"tls_server_config": {"cert": "x", "key": ["PRIVATEKEYSECRET"]}},
])
def test_errors_never_repeat_a_password_or_a_private_key(document):
    assert "SECRET" not in str(error_of(document))


def test_users_headers_and_rate_limit_are_read():
    config = parse_web_config({
        "basic_auth_users": {"alice": HASH},
        "http_server_config": {"http2": False, "headers": {"X-Frame-Options": "deny",
                                                           "Strict-Transport-Security": "max-age=31536000"}},
        "rate_limit": {"interval": "1m30s", "burst": 5},
    })
    assert config.basic_auth_users == {"alice": HASH.encode()}
    assert config.headers == {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}
    assert config.rate_limit == RateLimit(90.0, 5)


@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("250ms", 0.25), ("1h2m3s", 3723.0), ("1.5s", 1.5),
                                           ("0", 0.0), (0, 0.0)])
def test_go_durations(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "-1s", "1s "])
def test_bad_durations(text):
    with pytest.raises(WebConfigError):
        parse_duration(text, "x")


def test_basic_auth_checks_and_caches(monkeypatch):
    calls = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password, hashed):
        calls.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting_checkpw)
    auth, users = BasicAuth(), {"alice": HASH.encode()}
    assert auth.check(users, "alice", "s3cret")
    assert auth.check(users, "alice", "s3cret")
    assert len(calls) == 1                        # the second time came from the cache
    assert not auth.check(users, "alice", "wrong")
    assert not auth.check(users, "alice", "wrong")
    assert len(calls) == 2                        # failures are cached too
    assert not auth.check(users, "mallory", "s3cret")     # unknown users still cost a bcrypt
    assert len(calls) == 3
    assert not auth.check({}, "alice", "s3cret")   # a user removed is refused, whatever the cache holds


def test_the_cache_is_bounded():
    auth = BasicAuth()
    for i in range(150):
        auth.check({"alice": HASH.encode()}, "alice", f"guess-{i}")
    assert len(auth._cache) == 100


def test_rate_limiter_allows_the_burst_then_refuses():
    limiter = RateLimiter(RateLimit(interval_seconds=3600.0, burst=2))
    assert [limiter.allow() for _ in range(3)] == [True, True, False]


def test_ssl_context_from_files(tmp_path):
    cert, key = self_signed(tmp_path)
    config = parse_web_config({"tls_server_config": {"cert_file": cert.name, "key_file": key.name,
                                                     "min_version": "TLS13"}}, tmp_path)
    context = webconfig.ssl_context(config.tls, webconfig.read_tls_files(config.tls))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize("load", [load_web_config, WatchedWebConfig], ids=["check", "serve"])
def test_a_missing_certificate_is_reported_at_load(tmp_path, load):
    # `check` reads the file once; `serve` watches it, and does not start on an invalid one.
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    with pytest.raises(WebConfigError) as info:
        load(path)
    assert info.value.path == "tls_server_config.cert_file"


def test_allowed_sans():
    config = parse_web_config({"tls_server_config": {
        "cert_file": "x", "key_file": "y", "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": "ca.crt", "client_allowed_sans": ["scraper.example.com"]}})
    good = {"subjectAltName": (("DNS", "scraper.example.com"),)}
    other = {"subjectAltName": (("DNS", "evil.example.com"), ("IP Address", "10.0.0.1"))}
    assert webconfig.allowed_peer(config.tls, good)
    assert not webconfig.allowed_peer(config.tls, other)
    assert not webconfig.allowed_peer(config.tls, None)


def test_ssl_context_from_inline_pem(tmp_path):
    cert, key = self_signed(tmp_path)
    config = parse_web_config({"tls_server_config": {"cert": cert.read_text(), "key": key.read_text()}})
    assert isinstance(webconfig.ssl_context(config.tls, webconfig.read_tls_files(config.tls)), ssl.SSLContext)


def test_a_password_written_in_place_of_its_hash_is_not_repeated():
    error = error_of({"basic_auth_users": {"alice": "hunter2"}})
    assert error.path == "basic_auth_users.alice" and "hunter2" not in str(error)


def test_empty_keys_take_their_defaults():
    config = parse_web_config({"tls_server_config": None, "http_server_config": {"http2": None},
                               "rate_limit": {"interval": None}})
    assert (config.tls, config.rate_limit) == (None, RateLimit())


# -- re-reading the file as it changes -----------------------------------------------------

def replace(path, text: str) -> None:
    """Write `text` to `path` as tools that rotate files do: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


def users_file(tmp_path, *users: str):
    path = tmp_path / "web.yml"
    replace(path, "basic_auth_users:\n" + "".join(f"  {user}: '{HASH}'\n" for user in users) if users else "")
    return path


def test_a_user_added_or_removed_is_seen_by_the_next_check(tmp_path):
    watched = WatchedWebConfig(users_file(tmp_path, "alice"))
    assert set(watched.current().config.basic_auth_users) == {"alice"}
    users_file(tmp_path, "alice", "bob")
    assert set(watched.current().config.basic_auth_users) == {"alice", "bob"}
    users_file(tmp_path, "bob")
    assert set(watched.current().config.basic_auth_users) == {"bob"}


def test_an_unchanged_file_is_not_read_again(tmp_path):
    watched = WatchedWebConfig(users_file(tmp_path, "alice"))
    assert watched.current() is watched.current() is watched.initial


def test_a_file_rewritten_in_place_within_one_timestamp_tick_is_read_again(tmp_path):
    path = users_file(tmp_path, "alice")
    watched = WatchedWebConfig(path)
    before = os.stat(path)
    path.write_text(path.read_text().replace("alice", "carol"))         # in place, the same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))         # within the same tick
    assert os.stat(path).st_ino == before.st_ino
    assert set(watched.current().config.basic_auth_users) == {"carol"}


def test_the_contents_are_compared_only_while_the_newest_stamp_is_recent(tmp_path, monkeypatch):
    path = users_file(tmp_path, "alice")
    watched = WatchedWebConfig(path)
    reads = []
    digests = filewatch._digests
    monkeypatch.setattr(filewatch, "_digests", lambda paths: reads.append(paths) or digests(paths))
    watched.current()
    assert reads == [(path,)]
    settled = os.stat(path).st_mtime_ns + filewatch.RACY_NS
    monkeypatch.setattr(filewatch, "time", SimpleNamespace(time_ns=lambda: settled))
    watched.current()           # compared once more, after the tick: from now on the stamps suffice
    reads.clear()
    assert watched.current() is watched.initial
    assert reads == []


def test_a_stamp_ahead_of_the_clock_is_compared_only_once_the_clock_reaches_it(tmp_path, monkeypatch):
    path = users_file(tmp_path, "alice")
    future = os.stat(path).st_mtime_ns + 3600 * 10**9           # a file copied from a machine an hour ahead
    os.utime(path, ns=(future, future))
    watched = WatchedWebConfig(path)
    reads = []
    digests = filewatch._digests
    monkeypatch.setattr(filewatch, "_digests", lambda paths: reads.append(paths) or digests(paths))
    watched.current()
    assert reads == []
    monkeypatch.setattr(filewatch, "time", SimpleNamespace(time_ns=lambda: future))
    watched.current()
    assert reads == [(path,)]


def test_an_invalid_file_fails_until_fixed_and_is_logged_once(tmp_path, caplog):
    path = users_file(tmp_path, "alice")
    watched = WatchedWebConfig(path)
    replace(path, "basic_auth_users: [\n")
    for _ in range(3):
        with pytest.raises(WebConfigError, match="invalid YAML"):
            watched.current()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "invalid YAML" in errors[0].getMessage()
    users_file(tmp_path, "bob")
    assert set(watched.current().config.basic_auth_users) == {"bob"}


def tls_file(tmp_path, **extra) -> Path:
    path = tmp_path / "web.yml"
    replace(path, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                  + "".join(f"  {key}: {value}\n" for key, value in extra.items()))
    return path


def test_a_certificate_swapped_behind_a_symlink_is_read_again(tmp_path):
    # A Kubernetes secret volume: server.crt -> ..data/server.crt, and ..data is a link swapped to a new
    # directory; the name's size and mtime may well stay the same, its inode does not.
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        self_signed(tmp_path / version)
    os.symlink("v1", tmp_path / "..data")
    for name in ("server.crt", "server.key"):
        os.symlink(f"..data/{name}", tmp_path / name)
    watched = WatchedWebConfig(tls_file(tmp_path))
    assert watched.current().tls_files.cert == (tmp_path / "v1" / "server.crt").read_bytes()
    os.symlink("v2", tmp_path / "..data.new")
    os.replace(tmp_path / "..data.new", tmp_path / "..data")
    assert watched.current().tls_files.cert == (tmp_path / "v2" / "server.crt").read_bytes()


def test_a_key_that_does_not_match_the_certificate_fails_naming_the_key(tmp_path):
    self_signed(tmp_path)
    watched = WatchedWebConfig(tls_file(tmp_path))
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    os.replace(other_key, tmp_path / "server.key")
    with pytest.raises(WebConfigError, match="tls_server_config.cert_file: failed to load the certificate and key"):
        watched.current()
    self_signed(tmp_path)       # a matching pair again
    assert watched.current().ssl_context is not None


def test_turning_tls_off_takes_a_restart(tmp_path):
    self_signed(tmp_path)
    watched = WatchedWebConfig(tls_file(tmp_path))
    replace(tmp_path / "web.yml", "")
    with pytest.raises(WebConfigError, match="turning it on or off takes a restart"):
        watched.current()


def test_a_key_given_twice_is_an_error_as_in_exporter_toolkit(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n  alice: '{HASH}'\n")
    with pytest.raises(WebConfigError, match="the key 'alice' is given twice in one mapping"):
        load_web_config(path)


def test_a_yaml_error_says_where_without_quoting_the_line(tmp_path):
    """The line at fault, quoted by PyYAML, may hold a password hash: errors are logged on reload."""
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: [x\n  bob: '{HASH}'\n")
    with pytest.raises(WebConfigError) as raised:
        load_web_config(path)
    assert HASH not in str(raised.value) and "bob" not in str(raised.value)
    assert str(raised.value) == (f"invalid YAML in {path}: while parsing a flow sequence; "
                                 "expected ',' or ']', but got ':' at line 3, column 6")
