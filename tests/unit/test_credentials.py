"""Secrets read from the environment or a file, and the bearer token read again when its file changes."""

from __future__ import annotations

import logging
import os
import time

import pytest

from agent_exporter.credentials import FixedToken, TokenFile, bearer_token, given_token

ENV = "TEST_AGENT_EXPORTER_TOKEN"


def test_the_environment_wins_and_is_fixed_a_file_is_watched(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.delenv(ENV, raising=False)
    assert bearer_token("", "key", env=ENV) is None
    from_file = bearer_token(str(token_file), "key", env=ENV)
    assert isinstance(from_file, TokenFile) and from_file.current() == "from-file"
    monkeypatch.setenv(ENV, " from-env\n")
    from_env = bearer_token(str(token_file), "key", env=ENV)
    assert isinstance(from_env, FixedToken) and from_env.current() == "from-env"
    monkeypatch.setenv(ENV, "sécret")
    with pytest.raises(ValueError, match=f"^{ENV}: a bearer token is ASCII"):
        bearer_token(str(token_file), "key", env=ENV)


def test_a_rewrite_in_place_within_one_timestamp_tick_is_read(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("aaaa\n")
    token = TokenFile(str(token_file), "key")
    before = os.stat(token_file)
    token_file.write_text("bbbb\n")                                       # the same size, the same inode
    os.utime(token_file, ns=(before.st_atime_ns, before.st_mtime_ns))    # and the same stamp
    assert token.current() == "bbbb"


def test_a_token_file_that_turns_invalid_fails_closed_logged_once_until_fixed(tmp_path, caplog):
    token_file = tmp_path / "token"
    token_file.write_text("good\n")
    token = TokenFile(str(token_file), "server.bearer_token_file")
    broken_files = (("Xq7a\nXq7b\n", "holds a line break"), ("Xq7ï\n", "a bearer token is ASCII"), ("", "is empty"))
    for broken, why in broken_files:
        caplog.clear()
        token_file.write_text(broken)
        for _ in range(3):
            with pytest.raises(ValueError, match=why) as info:
                token.current()
            assert "Xq7" not in str(info.value)         # never the secret
        assert [r.levelno for r in caplog.records] == [logging.ERROR]
    token_file.unlink()
    with pytest.raises(ValueError, match="cannot read"):
        token.current()
    token_file.write_text("fixed\n")
    assert token.current() == "fixed"


def test_a_token_file_invalid_at_start_is_an_error_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="^server.bearer_token_file: cannot read"):
        TokenFile(str(tmp_path / "missing"), "server.bearer_token_file")


@pytest.mark.parametrize("token, why", [
    ("", "non-empty"),                  # an unset variable read as "": never "no auth"
    (" token", "surrounding whitespace"),
    (123, "string"),
    ("to\nken", "line break"),
    ("sécret", "ASCII"),                # sent as UTF-8, read as latin-1: never a match
])
def test_a_token_given_in_code_is_checked_as_a_file_is(token, why):
    with pytest.raises(ValueError, match=f"^bearer_token.*{why}"):
        given_token(token)


def test_a_token_given_in_code_is_fixed_and_a_source_passes_through(tmp_path):
    assert given_token(None) is None
    assert given_token("s3cret").current() == "s3cret"
    token_file = tmp_path / "token"
    token_file.write_text("t\n")
    source = TokenFile(str(token_file), "key")
    assert given_token(source) is source


def test_a_chmod_or_chown_is_a_change(tmp_path):
    """A key or token made readable by a chmod changes only the file's ctime: it was never read again."""
    from agent_exporter.filewatch import FileWatch
    path = tmp_path / "token"
    path.write_text("t\n")
    watch = FileWatch()
    watch.restart()
    watch.add(path)
    assert not watch.changed()
    os.chmod(path, 0o600)
    assert watch.changed()


def test_files_whose_reading_failed_are_read_again_every_second(tmp_path, monkeypatch):
    """A fix to a directory's permissions, or a remount, shows on no file's stamp."""
    from types import SimpleNamespace

    from agent_exporter import filewatch
    path = tmp_path / "token"
    path.write_text("t\n")
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(filewatch, "time", SimpleNamespace(monotonic=lambda: clock.now, time_ns=time.time_ns))
    watch = filewatch.FileWatch()
    watch.restart()
    watch.add(path)
    assert not watch.changed(failing=True)
    clock.now += filewatch.RETRY_SECONDS
    assert watch.changed(failing=True) and not watch.changed()


def test_a_failing_token_file_read_again_each_second_is_logged_once(tmp_path, monkeypatch, caplog):
    from agent_exporter import filewatch
    token_file = tmp_path / "token"
    token_file.write_text("good\n")
    token = TokenFile(str(token_file), "key")
    monkeypatch.setattr(filewatch, "RETRY_SECONDS", 0.0)        # every call retries
    token_file.write_text("")
    for _ in range(5):
        with pytest.raises(ValueError, match="is empty"):
            token.current()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
