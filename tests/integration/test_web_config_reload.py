"""The HTTP service re-reads its web config file as it changes, as exporter-toolkit does: a rotated
certificate for new TLS connections, users added and removed for the next request, and an invalid
file fails closed (500, refused handshakes) until it is fixed, with the server up throughout."""

from __future__ import annotations

import http.client
import logging
import os
import ssl
from pathlib import Path

import bcrypt
import pytest
import requests

from agent_exporter import Telemetry
from agent_exporter.config import Config
from agent_exporter.server import Service, start_server
from agent_exporter.webconfig import WatchedWebConfig

from certificates import client_certificate, self_signed

pytestmark = pytest.mark.integration

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def replace(path: Path, text: str) -> None:
    """Write `text` to `path` as tools that rotate files do: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


def rotate(directory: Path, name: str) -> Path:
    """A new server.crt and server.key (made in directory/name) moved over directory's; the new certificate."""
    (directory / name).mkdir()
    cert, key = self_signed(directory / name)
    os.replace(key, directory / "server.key")
    os.replace(cert, directory / "server.crt")
    return directory / "server.crt"


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def connect(port: int, trusted: Path) -> http.client.HTTPSConnection:
    """A keep-alive HTTPS connection that trusts `trusted` only, made now."""
    kept = trusted.with_name(trusted.name + ".trusted")      # the file may be replaced while in use
    kept.write_bytes(trusted.read_bytes())
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                             context=ssl.create_default_context(cafile=str(kept)))
    connection.connect()
    return connection


def get(connection: http.client.HTTPConnection, path: str = "/-/healthy") -> int:
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response.status


def serving(tmp_path: Path, web_config: str):
    replace(tmp_path / "web.yml", web_config)
    return start_server(Service(Telemetry(Config()), web_config=WatchedWebConfig(tmp_path / "web.yml")),
                        "127.0.0.1:0")


def test_a_rotated_certificate_is_served_to_new_connections_and_old_ones_keep_working(tmp_path):
    first, _ = self_signed(tmp_path)
    (tmp_path / "first.crt").write_bytes(first.read_bytes())
    with serving(tmp_path, TLS) as handle:
        old = connect(handle.port, tmp_path / "first.crt")
        old_socket = old.sock
        assert get(old) == 200
        second = rotate(tmp_path, "second")
        new = connect(handle.port, second)
        assert new.sock.getpeercert(binary_form=True) == der(second)
        assert get(new) == 200
        assert get(old) == 200                  # the keep-alive connection from before, on the old certificate
        assert old.sock is old_socket and old.sock.getpeercert(binary_form=True) == der(tmp_path / "first.crt")
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(handle.port, tmp_path / "first.crt")
        old.close()
        new.close()


def test_users_added_and_removed_apply_to_the_next_request(tmp_path):
    with serving(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n") as handle:
        metrics = handle.url + "/metrics"
        assert requests.get(metrics, auth=("bob", "s3cret"), timeout=10).status_code == 401
        replace(tmp_path / "web.yml", f"basic_auth_users:\n  alice: '{HASH}'\n  bob: '{HASH}'\n")
        assert requests.get(metrics, auth=("bob", "s3cret"), timeout=10).status_code == 200
        replace(tmp_path / "web.yml", f"basic_auth_users:\n  bob: '{HASH}'\n")
        assert requests.get(metrics, auth=("alice", "s3cret"), timeout=10).status_code == 401
        assert requests.get(metrics, auth=("bob", "s3cret"), timeout=10).status_code == 200


def test_headers_follow_the_file(tmp_path):
    with serving(tmp_path, "") as handle:
        assert "X-Frame-Options" not in requests.get(handle.url + "/-/healthy", timeout=10).headers
        replace(tmp_path / "web.yml", "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
        assert requests.get(handle.url + "/-/healthy", timeout=10).headers["X-Frame-Options"] == "deny"


def test_an_invalid_file_is_a_503_with_the_reason_logged_until_it_is_fixed(tmp_path, caplog):
    # 503, which OTLP exporters retry: exporter-toolkit's 500 made them drop their spans.
    caplog.set_level(logging.INFO, logger="agent_exporter.webconfig")
    with serving(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n") as handle:
        metrics = handle.url + "/metrics"
        replace(tmp_path / "web.yml", "basic_auth_users: [\n")
        for _ in range(2):
            answer = requests.get(metrics, auth=("alice", "s3cret"), timeout=10)
            assert answer.status_code == 503
            assert answer.text == "the web config is invalid; see the exporter's log\n"
        assert requests.post(handle.url + "/v1/events", json=[], timeout=10).json() == {
            "error": "the web config is invalid; see the exporter's log"}
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "invalid YAML" in errors[0] and str(tmp_path / "web.yml") in errors[0]
        replace(tmp_path / "web.yml", f"basic_auth_users:\n  alice: '{HASH}'\n")
        assert requests.get(metrics, auth=("alice", "s3cret"), timeout=10).status_code == 200
        assert any("reloaded the web config" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("emptied", ["", "# users moved elsewhere\n", "basic_auth_users: {}\n"])
def test_a_reload_that_removes_every_user_is_refused_not_an_open_door(tmp_path, caplog, emptied):
    """A file emptied, or caught between a truncate and a write, served /metrics and /v1/* to anyone."""
    with serving(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n") as handle:
        metrics = handle.url + "/metrics"
        replace(tmp_path / "web.yml", emptied)
        assert requests.get(metrics, timeout=10).status_code == 503
        assert requests.post(handle.url + "/v1/events", json=[], timeout=10).status_code == 503
        assert any("basic_auth_users: there were users at start" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.ERROR)
        replace(tmp_path / "web.yml", f"basic_auth_users:\n  bob: '{HASH}'\n")      # other users: fine
        assert requests.get(metrics, timeout=10).status_code == 401
        assert requests.get(metrics, auth=("bob", "s3cret"), timeout=10).status_code == 200


def test_a_key_that_does_not_match_fails_new_handshakes_until_it_is_fixed(tmp_path, caplog):
    cert, key = self_signed(tmp_path)
    good_key = key.read_bytes()
    with serving(tmp_path, TLS) as handle:
        kept = connect(handle.port, cert)
        (tmp_path / "other").mkdir()
        _, other_key = self_signed(tmp_path / "other")
        os.replace(other_key, key)
        with pytest.raises(ssl.SSLError):        # the handshake is refused
            connect(handle.port, cert)
        assert get(kept, "/metrics") == 503                   # a connection from before gets an answer
        assert any("tls_server_config.cert_file: failed to load the certificate and key" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.ERROR)
        replace(key, good_key.decode())
        fixed = connect(handle.port, cert)
        assert get(fixed, "/metrics") == 200
        kept.close()
        fixed.close()


def test_client_allowed_sans_apply_to_each_request_of_a_connection(tmp_path):
    ca = self_signed(tmp_path)          # the server's certificate is its own CA, and the clients'

    def client(name: str) -> http.client.HTTPSConnection:
        cert, key = client_certificate(tmp_path, ca, f"{name}.example")
        (tmp_path / f"{name}.crt").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
        context = ssl.create_default_context(cafile=str(ca[0]))
        context.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        return http.client.HTTPSConnection("127.0.0.1", handle.port, timeout=10, context=context)

    mtls = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
    with serving(tmp_path, mtls + "  client_allowed_sans: [collector.example]\n") as handle:
        collector, intruder = client("collector"), client("intruder")
        assert (get(collector), get(intruder)) == (200, 403)
        replace(tmp_path / "web.yml", mtls + "  client_allowed_sans: [intruder.example]\n")
        assert (get(collector), get(intruder)) == (403, 200)     # the same connections, now the other way
        collector.close()
        intruder.close()
