"""The local stack runner: real binaries on loopback, readiness, stop by PID."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from agent_exporter import stack

pytestmark = pytest.mark.integration

ALERTMANAGER_CONFIG = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port (SO_REUSEADDR, as servers do, so that
    connections closed a moment ago in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def assert_gone(process: stack.ManagedProcess, port: int) -> None:
    assert not process.running()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert port_is_free(port)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(process.url + "/-/ready", timeout=2)


def test_free_port_is_bindable_on_loopback():
    assert port_is_free(stack.free_port())


def test_prometheus_starts_ready_with_the_expected_flags_and_stops(tmp_path):
    port = stack.free_port()
    with stack.start_prometheus(tmp_path, "global:\n  scrape_interval: 1s\n", port=port) as process:
        assert process.url == f"http://127.0.0.1:{port}"
        assert process.running()
        flags = get_json(process.url + "/api/v1/status/flags")["data"]
        assert flags["web.listen-address"] == f"127.0.0.1:{port}"
        assert flags["storage.tsdb.path"] == str(tmp_path / "data")
        assert "exemplar-storage" in flags["enable-feature"]
        assert flags["web.enable-lifecycle"] == "true"
        api = stack.PrometheusAPI(process.url)
        assert api.query("vector(1)")[0]["value"][1] == "1"
        assert api.wait_until("vector(2)", lambda rows: rows[0]["value"][1] == "2", timeout=10)
        assert api.rules() == [] and api.alerts() == []
        now = time.time()
        assert api.query_exemplars("up", now - 60, now) == []
        with pytest.raises(stack.StackError, match="did not satisfy"):
            api.wait_until("vector(1)", lambda rows: False, timeout=1, interval=0.2)
        process.reload()
        assert process.running()
    assert process.log_path == tmp_path / "prometheus.log" and process.log_path.read_text()
    assert_gone(process, port)


def test_alertmanager_starts_ready_without_clustering_and_stops(tmp_path):
    port = stack.free_port()
    with stack.start_alertmanager(tmp_path, ALERTMANAGER_CONFIG, port=port) as process:
        status = get_json(process.url + "/api/v2/status")
        assert status["cluster"]["status"] == "disabled"
        assert (tmp_path / "am-data").is_dir()
    assert process.log_path == tmp_path / "alertmanager.log" and process.log_path.read_text()
    assert_gone(process, port)


def test_clustered_alertmanagers_find_each_other(tmp_path):
    first_cluster, second_cluster = stack.free_port(), stack.free_port()
    with stack.start_alertmanager(tmp_path / "a", ALERTMANAGER_CONFIG, cluster_port=first_cluster) as first, \
            stack.start_alertmanager(tmp_path / "b", ALERTMANAGER_CONFIG, cluster_port=second_cluster,
                                     cluster_peers=[f"127.0.0.1:{first_cluster}"]) as second:
        peers = stack.wait_for(
            lambda: [get_json(am.url + "/api/v2/status")["cluster"].get("peers", []) for am in (first, second)],
            lambda peers: all(len(p) == 2 for p in peers), timeout=30, what="two peers each")
        assert [len(p) for p in peers] == [2, 2], peers
        addresses = {peer["address"] for peer in peers[0]}
        assert addresses == {f"127.0.0.1:{first_cluster}", f"127.0.0.1:{second_cluster}"}


def test_a_bad_config_fails_promptly_with_the_log_tail(tmp_path):
    with pytest.raises(stack.StackError, match="prometheus exited") as failure:
        stack.start_prometheus(tmp_path, "scrape_configs: [{job_name: }]\n")
    assert "job_name is empty" in str(failure.value)   # Prometheus' own error, from its log


def test_a_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(stack.StackError, match="prometheus-alertmanager or alertmanager not found on PATH"):
        stack.start_alertmanager(tmp_path, ALERTMANAGER_CONFIG)
    with pytest.raises(stack.StackError, match="prometheus not found on PATH"):
        stack.start_prometheus(tmp_path, "")


def _exited(pid: int) -> bool:
    """Whether `pid` is gone or a zombie (an orphan's reaper may not have collected it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_what_a_killed_process_started_stops_with_it(tmp_path):
    # A parent that starts Prometheus, says its PID and port, and waits to be killed.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from agent_exporter import stack\n"
        "process = stack.start_prometheus(Path(sys.argv[1]), 'global:\\n  scrape_interval: 1s\\n')\n"
        "print(process.pid, process.url.rsplit(':', 1)[1], flush=True)\n"
        "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid, port = map(int, parent.stdout.readline().split())
        assert not _exited(pid)
        parent.kill()
        parent.wait(10)
        stack.wait_for(lambda: _exited(pid), timeout=15, interval=0.1, what="Prometheus stopped with its parent")
        stack.wait_for(lambda: port_is_free(port), timeout=5, interval=0.1, what="its port free")
    finally:
        stack.stop_process(parent)
        if pid is not None and not _exited(pid):
            os.kill(pid, signal.SIGKILL)       # left running: the failure above says so
