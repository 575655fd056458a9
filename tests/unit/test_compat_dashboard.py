"""The legacy dashboard generator: a saved metrics file becomes the legacy HTML page."""

import json
from html.parser import HTMLParser

from agent_exporter.compat.dashboard_generator import generate_dashboard
from agent_exporter.compat.metrics_collector import MetricsCollector
from agent_exporter.telemetry import Telemetry


class _Page(HTMLParser):
    """The cards (label -> value) and the agent table's rows of a generated page, as text."""

    def __init__(self, html: str):
        super().__init__()
        self.cards: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self._class = None
        self._label = None
        self._cell = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self._class = dict(attrs).get("class")
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self.rows[-1].append(self._cell)
            self._cell = None
        self._class = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._class == "metric-label":
            self._label = data
        elif self._class == "metric-value":
            self.cards[self._label] = data


def saved_document(tmp_path, calls) -> dict:
    collector = MetricsCollector(storage_dir=str(tmp_path / "metrics"), telemetry=Telemetry())
    for call in calls:
        collector.record_agent_execution(*call)
    return json.loads(collector.save_metrics().read_text())


def test_a_saved_session_becomes_the_legacy_page(tmp_path):
    document = saved_document(tmp_path, [
        ("planner", 1200.0, True, 1500, 0.03),
        ("planner", 800.0, False, 0, 0.0),
        ("coder", 15000.0, True, 4000, 0.12),
    ])

    path = generate_dashboard(document, str(tmp_path / "out" / "dashboard.html"))

    assert path == str(tmp_path / "out" / "dashboard.html")
    page = _Page((tmp_path / "out" / "dashboard.html").read_text())
    assert page.cards == {"Total Executions": "3", "Success Rate": "66.7%", "Average Latency": "5667ms",
                          "Total Cost": "$0.15"}
    assert [row for row in page.rows if row] == [["planner", "2", "50.0%", "1000ms", "$0.03"],
                                                 ["coder", "1", "100.0%", "15000ms", "$0.12"]]


def test_names_are_escaped_not_markup(tmp_path):
    document = saved_document(tmp_path, [("<img src=x onerror=alert(1)>&co", 10.0, True, 1, 0.01)])

    html = (tmp_path / "page.html")
    generate_dashboard(document, html)

    assert "<img" not in html.read_text()
    assert [row for row in _Page(html.read_text()).rows if row][0][0] == "<img src=x onerror=alert(1)>&co"


def test_default_path_and_an_empty_session(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = {"summary": MetricsCollector(telemetry=Telemetry()).get_summary(), "detailed_metrics": {}}

    path = generate_dashboard(empty)

    written = tmp_path / path
    assert written.parent == tmp_path / ".claude" / "orchestrator" / "dashboards"
    assert written.name.startswith("dashboard_") and written.suffix == ".html"
    page = _Page(written.read_text())
    assert page.cards == {"Total Executions": "0", "Success Rate": "0.0%", "Average Latency": "0ms",
                          "Total Cost": "$0.00"}
    assert [row for row in page.rows if row] == []
