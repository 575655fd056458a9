"""Run local Prometheus and Alertmanager binaries on loopback, for the demo and the tests.

Everything started here listens on 127.0.0.1, logs into its work directory,
and is stopped by its own PID (SIGTERM, then SIGKILL after a deadline).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")   # Debian's name first


class StackError(RuntimeError):
    """A binary is missing, or a process did not become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(candidates: tuple[str, ...]) -> str:
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    raise StackError(f"{' or '.join(candidates)} not found on PATH (apt-get install prometheus prometheus-alertmanager)")


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class ManagedProcess:
    """A started binary: its URL, PID and log; `stop()` (or leaving the `with`) ends it."""

    def __init__(self, name: str, args: list[str], url: str, log_path: Path):
        self.name = name
        self.url = url
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.pid = self._process.pid

    def wait_ready(self, timeout: float = 30.0) -> "ManagedProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise StackError(f"{self.name} exited with {self._process.returncode}: {self.log_tail()}")
            try:
                _get(self.url + "/-/ready", timeout=1)
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise StackError(f"{self.name} not ready within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self._process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._process.wait(timeout)
        self._log.close()

    def reload(self) -> None:
        """Ask the process to re-read its configuration (both binaries take POST /-/reload)."""
        request = urllib.request.Request(self.url + "/-/reload", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def __enter__(self) -> "ManagedProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _prepare(workdir: Path, config_name: str, config_text: str, port: int | None) -> tuple[Path, Path, int]:
    """The work directory, the written config file's path, and the port to listen on."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / config_name
    config_path.write_text(config_text)
    return workdir, config_path, port or free_port()


def start_prometheus(workdir: Path, config_text: str, *, port: int | None = None, extra_args=(),
                     timeout: float = 30.0) -> ManagedProcess:
    """Prometheus with `config_text` as prometheus.yml in `workdir` (rule_files resolve from there)."""
    binary = find_binary(PROMETHEUS_BINARIES)
    workdir, config_path, port = _prepare(workdir, "prometheus.yml", config_text, port)
    args = [binary, f"--config.file={config_path}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={workdir / 'data'}", "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle", *extra_args]
    return ManagedProcess("prometheus", args, f"http://127.0.0.1:{port}",
                          workdir / "prometheus.log").wait_ready(timeout)


def start_alertmanager(workdir: Path, config_text: str, *, port: int | None = None, cluster_peers=(),
                       cluster_port: int | None = None, extra_args=(), timeout: float = 30.0) -> ManagedProcess:
    """Alertmanager with `config_text` as alertmanager.yml in `workdir`.

    Clustering stays off (`--cluster.listen-address=`, so it binds nothing else)
    unless `cluster_port` or `cluster_peers` are given.
    """
    binary = find_binary(ALERTMANAGER_BINARIES)
    workdir, config_path, port = _prepare(workdir, "alertmanager.yml", config_text, port)
    args = [binary, f"--config.file={config_path}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.path={workdir / 'am-data'}"]
    if cluster_port or cluster_peers:
        args.append(f"--cluster.listen-address=127.0.0.1:{cluster_port or free_port()}")
        args += [f"--cluster.peer={peer}" for peer in cluster_peers]
        # Loopback peers settle fast; the default gossip timings are made for networks.
        args += ["--cluster.settle-timeout=2s", "--cluster.pushpull-interval=2s", "--cluster.gossip-interval=50ms"]
    else:
        args.append("--cluster.listen-address=")
    args += list(extra_args)
    return ManagedProcess("alertmanager", args, f"http://127.0.0.1:{port}",
                          workdir / "alertmanager.log").wait_ready(timeout)


class PrometheusAPI:
    """The few query-API calls the demo and the tests need."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, path: str, **params) -> object:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        body = json.loads(_get(f"{self.url}{path}?{query}", timeout=10))
        if body.get("status") != "success":
            raise StackError(f"{path}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, time_: float | None = None) -> list[dict]:
        data = self._call("/api/v1/query", query=expr, time=time_)
        return data["result"]

    def wait_until(self, expr: str, predicate, timeout: float = 30.0, interval: float = 0.5) -> list[dict]:
        """Query until `predicate(result)` holds; the last result, or StackError at the deadline."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(interval)
        raise StackError(f"{expr!r} did not satisfy the condition within {timeout:.0f}s; last result {result!r}")

    def rules(self) -> list[dict]:
        return self._call("/api/v1/rules")["groups"]

    def alerts(self) -> list[dict]:
        return self._call("/api/v1/alerts")["alerts"]

    def targets(self) -> list[dict]:
        return self._call("/api/v1/targets")["activeTargets"]

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict]:
        return self._call("/api/v1/query_exemplars", query=expr, start=start, end=end)
