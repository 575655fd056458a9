"""docker-compose.yml and the configs it mounts agree with each other.

`docker-compose config -q` validates the file (Debian's docker-compose needs no
engine for that). The rest parses the YAMLs and checks that every address one
service uses for another (Prometheus targets and Alertmanagers, Alertmanager's
SMTP and webhooks, Grafana's datasources, the exporter's OTLP endpoint) names a
compose service on a port it listens on, and that every path a config refers to
is mounted from a file or directory that exists in the repository.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from agent_exporter.durations import prometheus_seconds
from agent_exporter.render import common, dashboards, panels

from binaries import binary

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
UI_PORTS = {3000, 9090, 9093, 16686, 8025}


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([binary("docker-compose"), "-f", str(COMPOSE), "config", "-q"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def flag(service: dict, name: str) -> str:
    """The value of `--name=value` in a service's command."""
    (value,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"--{name}=")]
    return value


def mounts(service: dict) -> list[tuple[Path, PurePosixPath]]:
    """Bind mounts of repository paths: (host path, container path)."""
    found = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found.append((REPO / source, PurePosixPath(target)))
    return found


def host_path(service: dict, container_path: str) -> Path:
    """Where a container path comes from in the repository (the deepest mount wins)."""
    path = PurePosixPath(container_path)
    candidates = [(target, source) for source, target in mounts(service)
                  if path == target or target in path.parents]
    assert candidates, f"{container_path} is not mounted from the repository"
    target, source = max(candidates, key=lambda pair: len(pair[0].parts))
    return source.joinpath(*path.parts[len(target.parts):])


def listening_ports(service: dict) -> set[int]:
    ports = {int(p) for p in service.get("expose", [])}
    ports |= {int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])}
    return ports


def assert_reaches_service(services: dict, address: str, expected_service: str) -> None:
    """`address` (a URL or host:port) names `expected_service` on a port it listens on."""
    netloc = urlsplit(address).netloc if "//" in address else address
    host, port = netloc.rsplit(":", 1)
    assert host == expected_service, f"{address} should reach the {expected_service} service"
    assert int(port) in listening_ports(services[host]), f"{host} does not listen on {port}"


def find_keys(node, suffix: str):
    """Every value of a key ending with `suffix`, anywhere in a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(suffix) and isinstance(value, str):
                yield value
            yield from find_keys(value, suffix)
    elif isinstance(node, list):
        for item in node:
            yield from find_keys(item, suffix)


# -- the compose file itself -------------------------------------------------


def test_compose_file_is_valid():
    result = compose_config({**os.environ, "GRAFANA_ADMIN_PASSWORD": "test-only"})
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_without_a_grafana_admin_password():
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    result = compose_config(env)
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_images_are_pinned(services):
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else "latest"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned"


def test_grafana_runs_the_version_the_dashboards_are_written_for(services):
    assert services["grafana"]["image"] == f"grafana/grafana:{panels.GRAFANA_VERSION}"


def test_only_the_uis_are_published_and_only_on_loopback(services):
    published = set()
    for name, service in services.items():
        for mapping in service.get("ports", []):
            address, host_port, container_port = mapping.split(":")
            assert address == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            assert host_port == container_port, mapping
            published.add(int(host_port))
    assert published == UI_PORTS


def test_every_service_is_health_checked_and_dependencies_wait_for_health(services):
    for name, service in services.items():
        if "build" in service:
            dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
            assert re.search(r"^HEALTHCHECK ", dockerfile.read_text(), re.M), name
        else:
            assert service["healthcheck"]["test"], name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_grafana_admin_password_comes_from_the_environment_without_a_default(services):
    env = services["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_mounted_repository_paths_exist(services):
    for name, service in services.items():
        for source, _ in mounts(service):
            assert source.exists(), f"{name} mounts missing {source.relative_to(REPO)}"


# -- Prometheus --------------------------------------------------------------


def test_prometheus_runs_the_mounted_config_with_exemplar_storage(services):
    prometheus = services["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    config_file = host_path(prometheus, flag(prometheus, "config.file"))
    assert config_file == REPO / "prometheus" / "prometheus.yml"
    assert config_file.is_file()


def test_prometheus_keeps_the_longest_window_a_dashboard_or_rule_reads(services):
    """The cost dashboard's 30-day spend read over a shorter retention shows only what is
    left (half of it with 15 days), against the whole monthly budget."""
    texts = [p.read_text() for p in (REPO / "grafana" / "dashboards").glob("*.json")]
    texts += [p.read_text() for p in (REPO / "prometheus" / "rules").glob("*.yml")]
    windows = {w for text in texts for w in re.findall(r"\[(\d+[smhdwy])(?::[^\]]*)?\]", text)}
    longest = max(windows, key=prometheus_seconds)
    retention = flag(services["prometheus"], "storage.tsdb.retention.time")
    assert prometheus_seconds(retention) >= prometheus_seconds(longest), (retention, longest)


def test_prometheus_scrapes_the_exporter_service(services):
    config = load("prometheus/prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "agent-exporter"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets
    for target in targets:
        assert_reaches_service(services, target, "agent-exporter")
    exporter = services["agent-exporter"]
    listen_port = int(flag(exporter, "web.listen-address").rsplit(":", 1)[1])
    assert {int(t.rsplit(":", 1)[1]) for t in targets} == {listen_port}


def test_prometheus_sends_alerts_to_the_alertmanager_service(services):
    config = load("prometheus/prometheus.yml")
    targets = [t for am in config["alerting"]["alertmanagers"]
               for group in am["static_configs"] for t in group["targets"]]
    assert targets
    for target in targets:
        assert_reaches_service(services, target, "alertmanager")


def test_prometheus_rule_files_are_mounted(services):
    prometheus = services["prometheus"]
    config_dir = PurePosixPath(flag(prometheus, "config.file")).parent
    patterns = load("prometheus/prometheus.yml")["rule_files"]
    assert patterns
    for pattern in patterns:
        matched = glob.glob(str(host_path(prometheus, str(config_dir / pattern))))
        assert matched, f"rule_files {pattern} matches nothing in the mounted directory"


def test_grafana_time_interval_is_the_scrape_interval():
    scrape_interval = load("prometheus/prometheus.yml")["global"]["scrape_interval"]
    datasources = load("grafana/provisioning/datasources/agent-exporter.yaml")["datasources"]
    (prometheus,) = [d for d in datasources if d["uid"] == dashboards.PROMETHEUS_UID]
    assert prometheus["jsonData"]["timeInterval"] == scrape_interval


# -- Alertmanager ------------------------------------------------------------


def test_alertmanager_config_templates_and_secrets_are_mounted(services):
    alertmanager = services["alertmanager"]
    container_config = PurePosixPath(flag(alertmanager, "config.file"))
    config_file = host_path(alertmanager, str(container_config))
    assert config_file == REPO / "alertmanager" / "alertmanager.yml"
    config = yaml.safe_load(config_file.read_text())

    def mounted(path: str) -> Path:
        # Alertmanager resolves relative paths against the config file's directory.
        return host_path(alertmanager, str(container_config.parent / path))

    assert config.get("templates"), "alertmanager.yml loads no templates"
    for pattern in config["templates"]:
        assert glob.glob(str(mounted(pattern))), pattern
    # Secret files are the user's to write, so only their directory must be mounted.
    secret_files = list(find_keys(config, "_file"))
    assert secret_files, "alertmanager.yml reads no secret from a file"
    for path in secret_files:
        assert mounted(path).parent.is_dir(), path


def test_alertmanager_delivers_email_to_mailpit(services):
    config = load("alertmanager/alertmanager.yml")
    smarthosts = list(find_keys(config, "smarthost"))
    assert smarthosts
    for smarthost in smarthosts:
        assert_reaches_service(services, smarthost, "mailpit")


def test_alertmanager_webhooks_reach_the_exporter(services):
    config = load("alertmanager/alertmanager.yml")
    urls = [c["url"] for r in config["receivers"] for c in r.get("webhook_configs", [])]
    for url in urls:
        assert_reaches_service(services, url, "agent-exporter")


# -- Grafana -----------------------------------------------------------------


def test_grafana_datasources_point_at_the_stack_services(services):
    datasources = load("grafana/provisioning/datasources/agent-exporter.yaml")["datasources"]
    expected = {dashboards.PROMETHEUS_UID: "prometheus", dashboards.ALERTMANAGER_UID: "alertmanager",
                dashboards.JAEGER_UID: "jaeger"}
    assert {d["uid"] for d in datasources} == set(expected)
    for datasource in datasources:
        assert_reaches_service(services, datasource["url"], expected[datasource["uid"]])


def test_grafana_provisioning_and_dashboards_are_mounted(services):
    grafana = services["grafana"]
    assert host_path(grafana, "/etc/grafana/provisioning") == REPO / "grafana" / "provisioning"
    providers = load("grafana/provisioning/dashboards/agent-exporter.yaml")["providers"]
    for provider in providers:
        folder = host_path(grafana, provider["options"]["path"])
        assert folder == REPO / "grafana" / "dashboards"
        assert sorted(p.stem for p in folder.glob("*.json")) == sorted(common.DASHBOARD_UIDS.values())
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == folder / f"{dashboards.OVERVIEW_UID}.json"


# -- the exporter ------------------------------------------------------------


def test_exporter_config_points_at_the_stack_services(services):
    from agent_exporter.config import load_config

    exporter = services["agent-exporter"]
    config_file = host_path(exporter, flag(exporter, "config.file"))
    config = load_config(config_file)
    assert config.tracing.export_to_otlp
    assert_reaches_service(services, config.tracing.otlp_endpoint, "jaeger")
    assert_reaches_service(services, config.alerting.alertmanager_url, "alertmanager")
    listen_port = flag(exporter, "web.listen-address").rsplit(":", 1)[1]
    assert config.server.listen_address.rsplit(":", 1)[1] == listen_port


def test_exporter_image_runs_unprivileged_and_checks_its_health(services):
    build = services["agent-exporter"]["build"]
    assert build["context"] == "."
    dockerfile = (REPO / build["dockerfile"]).read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.M)     # the tested Debian release
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user not in ("root", "0")
    port = flag(services["agent-exporter"], "web.listen-address").rsplit(":", 1)[1]
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M)
    assert port in {str(p) for p in services["agent-exporter"]["expose"]}
    (healthcheck,) = re.findall(r"^HEALTHCHECK (?:.*\\\n)*.*", dockerfile, re.M)
    assert f"http://127.0.0.1:{port}/-/healthy" in healthcheck


def test_the_exporter_image_is_built_from_its_sources_only(services):
    # docker-compose 1.29 sends the build context through docker-py, which reads only the root
    # .dockerignore: without it, .venv and alertmanager/secrets/ went to the daemon.  Listed by
    # docker-py itself, with the interpreter docker-compose runs on.
    build = services["agent-exporter"]["build"]
    interpreter = Path(binary("docker-compose")).read_text().splitlines()[0].removeprefix("#!").split()
    listing = subprocess.run(
        [*interpreter, "-c", "import os, sys\nfrom docker.utils.build import exclude_paths\n"
         "lines = open(sys.argv[2]).read().splitlines() if os.path.exists(sys.argv[2]) else []\n"
         "patterns = [l.strip() for l in lines if l.strip() and not l.startswith('#')]\n"
         "print('\\n'.join(exclude_paths(sys.argv[1], patterns, dockerfile=sys.argv[3])))",
         str(REPO / build["context"]), str(REPO / build["context"] / ".dockerignore"), build["dockerfile"]],
        capture_output=True, text=True, timeout=60, check=True)
    sent = {path.split("/agent_exporter/")[0] + "/agent_exporter" if "/agent_exporter/" in path else path
            for path in listing.stdout.split()}
    assert sent == {".dockerignore", "README.md", "pyproject.toml", "exporter/Dockerfile", "exporter/agent_exporter"}
