"""The local stack on loopback, for the demo and the tests: Prometheus, Alertmanager, sinks, replicas.

Everything started here listens on 127.0.0.1, logs into its work directory,
and is stopped by its own PID (SIGTERM, then SIGKILL after a deadline), or
with SIGTERM from the kernel if the process that started it is killed outright.
start_stack() brings up what `agent-exporter demo --stack` shows: the rules and
routes rendered from the config with short windows, Alertmanager (clustered
when more than one), Prometheus scraping the orchestrator replicas, and local
Slack and SMTP sinks (the `demo` extra); start_replica() starts one
orchestrator replica (`agent-exporter demo` in a process of its own).
wait_for() is the one helper that polls until a condition holds, and
ports.free_port the one that finds a port: the demo, the tests and the
benches use them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from msgspec.structs import replace

from .config import Config
from .ports import free_port

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")   # Debian's name first


class StackError(RuntimeError):
    """A binary is missing, or a process did not become ready."""


def find_binary(candidates: tuple[str, ...]) -> str:
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    raise StackError(f"{' or '.join(candidates)} not found on PATH (apt-get install prometheus prometheus-alertmanager)")


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_for(probe, predicate=bool, *, timeout: float, interval: float = 0.2, what: str = "the condition"):
    """Call `probe()` until `predicate(value)` holds; that value, or StackError at the deadline.

    A probe that raises OSError (a server not answering yet) counts as not holding."""
    deadline = time.monotonic() + timeout
    value, error = None, None
    while True:
        try:
            value, error = probe(), None
            if predicate(value):
                return value
        except OSError as exc:
            error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    last = f"last error {error!r}" if error is not None else f"last result {value!r}"
    raise StackError(f"{what} within {timeout:.0f}s; {last}")


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stop a process we started, by its PID: SIGTERM, SIGKILL after `timeout`; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


def _with_parent_death_signal(args: list[str]) -> list[str]:
    """`args` run so that the process gets SIGTERM when the one that started it dies.

    A process killed outright (SIGKILL, the OOM killer) cannot stop what it started, which would go
    on holding its port.  util-linux's setpriv (Linux) sets the parent-death signal and execs the
    binary, so the PID stays the binary's.  The kernel sends the signal when the *thread* that
    started the process ends: start them from one that outlives them (the main thread, as the demo
    and the tests do).  Without setpriv, the process runs as given.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *args] if setpriv else args


class ManagedProcess:
    """A started binary: its URL, PID and log; `stop()` (or leaving the `with`) ends it, `restart()`
    starts it again with the same arguments (its port and data stay)."""

    def __init__(self, name: str, args: list[str], url: str, log_path: Path, env: dict | None = None):
        self.name = name
        self.url = url
        self.log_path = log_path
        self._args = args
        self._env = env
        self._spawn()

    def _spawn(self) -> None:
        self._log = open(self.log_path, "ab")
        # A session of its own: Ctrl-C in a terminal signals only the process that started this one,
        # which stops what it started in order.  (Signalled together, a clustered Alertmanager whose
        # peer is already gone spends 10 s trying to leave the cluster before it exits.)
        self._process = subprocess.Popen(_with_parent_death_signal(self._args), stdout=self._log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
                                         start_new_session=True)
        self.pid = self._process.pid

    def restart(self, timeout: float = 30.0) -> "ManagedProcess":
        self.stop()
        self._spawn()
        return self.wait_ready(timeout)

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def wait_ready(self, timeout: float = 30.0) -> "ManagedProcess":
        def ready() -> bool:
            if self._process.poll() is not None:
                raise StackError(f"{self.name} exited with {self._process.returncode}")
            _get(self.url + "/-/ready", timeout=1)       # URLError is an OSError: not ready yet
            return True
        try:
            wait_for(ready, timeout=timeout, interval=0.1, what=f"{self.name} not ready")
        except StackError as exc:
            self.stop()
            raise StackError(f"{exc}: {self.log_tail()}") from None
        return self

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, SIGKILL after `timeout`; the exit status."""
        code = stop_process(self._process, timeout)
        self._log.close()
        return code

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
        return wait_for(lambda: self.query(expr), predicate, timeout=timeout, interval=interval,
                        what=f"{expr!r} did not satisfy the condition")

    def rules(self) -> list[dict]:
        return self._call("/api/v1/rules")["groups"]

    def alerts(self) -> list[dict]:
        return self._call("/api/v1/alerts")["alerts"]

    def targets(self) -> list[dict]:
        return self._call("/api/v1/targets")["activeTargets"]

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict]:
        return self._call("/api/v1/query_exemplars", query=expr, start=start, end=end)


# -- the demo's stack -------------------------------------------------------------------

# Scrape and evaluate every second, alert on the last minute, notify at once.
STACK_INTERVAL = "1s"
STACK_RATE_WINDOW = "1m"
STACK_ALERT_FOR = "5s"


def stack_config(config: Config, *, exporter_url: str, alertmanager_url: str, slack_url_file: Path,
                 smtp_port: int) -> Config:
    """Short windows and intervals; Alertmanager's receivers pointed at the local sinks and `exporter_url`."""
    alerting = config.alerting
    return replace(
        config,
        metrics=replace(config.metrics, collection_interval=1.0),
        alerting=replace(
            alerting,
            enabled=True,
            evaluation_interval=STACK_INTERVAL,
            rate_window=STACK_RATE_WINDOW,
            alert_for=STACK_ALERT_FOR,
            alertmanager_url=alertmanager_url,
            exporter_url=exporter_url,
            slack=replace(alerting.slack, webhook_url_file=str(slack_url_file)),
            email=replace(alerting.email, smtp_server="127.0.0.1", smtp_port=smtp_port,
                          username="", password_file="", require_tls=False),
        ),
    )


def prometheus_yml(config: Config, rules_dir: Path, targets, alertmanagers, *, interval: str = STACK_INTERVAL) -> str:
    """prometheus.yml scraping `targets` (HOST:PORT) as the config's exporter job, alerting to `alertmanagers`."""
    from .render.prometheus import prometheus_config
    return prometheus_config(targets, job=config.alerting.job, alertmanagers=alertmanagers,
                             rule_files=[f"{rules_dir}/*.yml"], scrape_interval=interval,
                             evaluation_interval=interval)


def alertmanager_yml(config: Config, templates_dir: Path) -> str:
    """The rendered routes, notifying at once (the stack's alerts are seconds long)."""
    from .render import alertmanager as am
    from .render.common import dump_yaml
    document = am.alertmanager_config(config)
    document["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    document["templates"] = [str(templates_dir / am.TEMPLATE_NAME)]
    return dump_yaml(document)


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


@dataclass
class LocalStack:
    config: Config                    # as rendered: the stack's windows, Alertmanager and sinks
    prometheus: ManagedProcess
    alertmanagers: list[ManagedProcess]
    slack: object                     # sinks.SlackSink
    smtp: object                      # sinks.SMTPSink


def start_stack(cleanup: ExitStack, config: Config, *, workdir: Path, targets, exporter_url: str,
                alertmanagers: int = 1, on_slack=None, on_email=None) -> LocalStack:
    """Sinks, rendered rules and routes, Alertmanager(s), Prometheus; each is registered on `cleanup` to stop.

    Prometheus scrapes `targets` (HOST:PORT of the exporters); remediation
    webhooks go to `exporter_url`; `on_slack(body)` and `on_email(message)` see
    what the sinks receive.  Several Alertmanagers form one cluster.
    """
    try:
        from .sinks import SlackSink, SMTPSink
    except ImportError as exc:
        raise StackError(f"the local Slack and SMTP sinks need the demo extra ({exc}): "
                         "pip install 'agent-exporter[demo]'") from None
    from .render.alertmanager import render_alertmanager
    from .render.rules import alert_rules, recording_rules, write_rules

    workdir = Path(workdir)
    slack = SlackSink(on_message=on_slack).start()
    cleanup.callback(slack.stop)
    smtp = SMTPSink(on_message=on_email).start()
    cleanup.callback(smtp.stop)
    slack_url_file = workdir / "slack_webhook_url"
    slack_url_file.write_text(slack.url + "\n")

    ports = [free_port() for _ in range(alertmanagers)]
    config = stack_config(config, exporter_url=exporter_url, alertmanager_url=f"http://127.0.0.1:{ports[0]}",
                          slack_url_file=slack_url_file, smtp_port=smtp.port)
    rendered = workdir / "rendered"
    write_rules(rendered / "prometheus" / "rules", recording_rules(config), alert_rules(config))
    render_alertmanager(config, rendered)
    routes = alertmanager_yml(config, rendered / "alertmanager" / "templates")
    cluster_ports = [free_port() for _ in ports] if alertmanagers > 1 else [None]
    members = []
    for i, port in enumerate(ports):
        peers = [f"127.0.0.1:{cluster_ports[0]}"] if i else ()
        member = start_alertmanager(workdir / f"alertmanager-{i}", routes, port=port,
                                    cluster_port=cluster_ports[i], cluster_peers=peers)
        cleanup.callback(member.stop)
        members.append(member)
    prometheus = start_prometheus(
        workdir / "prometheus",
        prometheus_yml(config, rendered / "prometheus" / "rules", targets, [host_port(m.url) for m in members]),
        extra_args=("--rules.alert.resend-delay=1s",))
    cleanup.callback(prometheus.stop)
    return LocalStack(config, prometheus, members, slack, smtp)


def start_replica(workdir: Path, *, port: int | None = None, demo_args=(), timeout: float = 30.0) -> ManagedProcess:
    """One orchestrator replica: `agent-exporter demo DEMO_ARGS` on 127.0.0.1:PORT, its output in replica.log."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [sys.executable, "-m", "agent_exporter", "demo", f"--web.listen-address=127.0.0.1:{port}", *demo_args]
    return ManagedProcess("replica", args, f"http://127.0.0.1:{port}", workdir / "replica.log",
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}).wait_ready(timeout)
