"""The legacy `observability.dashboard_generator` API: a static HTML page of saved metrics.

The live dashboards are Grafana's (the *Orchestrator overview* has the same
cards and agent table).  This keeps the legacy scripts that archive a
session's page working: `generate_dashboard()` takes the document of
`MetricsCollector.save_metrics()` (`summary` and `detailed_metrics`) and writes
the same page the legacy generator wrote, with the names in it escaped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT_DIR = ".claude/orchestrator/dashboards"

_STYLE = """
        body { font-family: Arial, sans-serif; margin: 20px; background: #f5f5f5; }
        .container { max-width: 1200px; margin: 0 auto; }
        h1 { color: #333; }
        .metric-card { background: white; padding: 20px; margin: 15px 0; border-radius: 8px;
                       box-shadow: 0 2px 4px rgba(0,0,0,0.1); }
        .metric-value { font-size: 36px; font-weight: bold; color: #4CAF50; }
        .metric-label { font-size: 14px; color: #666; text-transform: uppercase; }
        table { width: 100%; border-collapse: collapse; margin: 20px 0; background: white; }
        th, td { border: 1px solid #ddd; padding: 12px; text-align: left; }
        th { background-color: #4CAF50; color: white; }
        tr:nth-child(even) { background-color: #f2f2f2; }"""


def generate_dashboard(metrics: Mapping[str, Any], output_file: str | os.PathLike | None = None) -> str:
    """Write the HTML page of `metrics` to `output_file` (default: a timestamped file under
    DEFAULT_OUTPUT_DIR, relative to the working directory); returns its path."""
    now = datetime.now()
    path = Path(output_file if output_file is not None
                else f"{DEFAULT_OUTPUT_DIR}/dashboard_{now.strftime('%Y%m%d_%H%M%S')}.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(metrics, now), encoding="utf-8")
    return str(path)


def _page(metrics: Mapping[str, Any], now: datetime) -> str:
    # A summary without executions is {"message": ...}: the cards show zeros, as the legacy page did.
    summary = metrics.get("summary", {})
    cards = [("Total Executions", f"{summary.get('total_executions', 0)}"),
             ("Success Rate", f"{summary.get('success_rate', 0) * 100:.1f}%"),
             ("Average Latency", f"{summary.get('average_latency_ms', 0):.0f}ms"),
             ("Total Cost", f"${summary.get('total_cost', 0):.2f}")]
    generated = now.strftime("%Y-%m-%d %H:%M:%S")
    lines = ["<!DOCTYPE html>", "<html>", "<head>", '    <meta charset="utf-8">',
             f"    <title>Orchestrator Dashboard - {generated}</title>", f"    <style>{_STYLE}\n    </style>",
             "</head>", "<body>", '    <div class="container">', "        <h1>Orchestrator Performance Dashboard</h1>",
             f"        <p>Generated: {generated}</p>"]
    for label, value in cards:
        lines += ['        <div class="metric-card">', f'            <div class="metric-label">{label}</div>',
                  f'            <div class="metric-value">{value}</div>', "        </div>"]
    lines += ['        <div class="metric-card">', "            <h2>Agent Performance</h2>", "            <table>",
              "                <tr><th>Agent</th><th>Executions</th><th>Success Rate</th><th>Avg Latency</th>"
              "<th>Total Cost</th></tr>"]
    lines += [f"                {row}" for row in _agent_rows(metrics.get("detailed_metrics", {}))]
    lines += ["            </table>", "        </div>", "    </div>", "</body>", "</html>", ""]
    return "\n".join(lines)


def _agent_rows(detailed: Mapping[str, Any]) -> list[str]:
    """One row per agent with a cost entry (every recorded agent has one), as the legacy page."""
    successes, failures = detailed.get("success_counts", {}), detailed.get("failure_counts", {})
    latencies, costs = detailed.get("latencies", {}), detailed.get("costs", {})
    rows = []
    for agent, cost in costs.items():
        total = successes.get(agent, 0) + failures.get(agent, 0)
        success_rate = successes.get(agent, 0) / total * 100 if total else 0
        agent_latencies = latencies.get(agent, [])
        average = sum(agent_latencies) / len(agent_latencies) if agent_latencies else 0
        rows.append(f"<tr><td>{escape(str(agent))}</td><td>{total}</td><td>{success_rate:.1f}%</td>"
                    f"<td>{average:.0f}ms</td><td>${cost:.2f}</td></tr>")
    return rows


__all__ = ["generate_dashboard"]
