"""`agent-exporter demo`: a simulated orchestrator, its metrics, and (with --stack) its alerts.

workload.py is the simulated orchestrator and its incident, console.py what the
terminal shows, runner.py puts them together with the exporter and the
self-healing layer, and with --stack around the local Prometheus and
Alertmanager (stack.py).  With --stack, alerts reach a local Slack-webhook sink
and SMTP sink, printed as `[slack] ...` and `[email] ...` lines, and the
exporter's /v1/alertmanager webhook, which opens the failing agent's breaker;
changes of agent health are printed as `[healing] ...` lines.  --replicas N runs
N orchestrator processes that share the alerts and statistics through
Alertmanager's and Prometheus's APIs (docs/scaling.md).
"""

from .runner import run_demo
from .workload import Incident

__all__ = ["Incident", "run_demo"]
