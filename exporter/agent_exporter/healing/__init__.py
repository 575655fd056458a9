"""Self-healing: retries, fallback chains, circuit breakers, adaptive agent selection.

The pieces compose in a Healer; an AlertRemediator lets Alertmanager open and
close breakers (POST /v1/alertmanager, and for a fleet of replicas its v2 API,
polled with the fleet's Prometheus statistics: see fleet.py) and reports agent
health (GET /v1/agents); the simulate module compares the policies on scripted
degradations.
"""

from .alertmanager import decode_webhook
from .breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitBreakers, CircuitOpenError
from .fallback import FallbackChain
from .fleet import Fleet
from .healer import Healer, error_type
from .remediation import AlertRemediator
from .retry import RetryPolicy
from .selector import AdaptiveSelector, FleetStats
from .simulate import format_table, run_simulation

__all__ = [
    "CLOSED", "HALF_OPEN", "OPEN", "AdaptiveSelector", "AlertRemediator", "CircuitBreaker", "CircuitBreakers",
    "CircuitOpenError", "FallbackChain", "Fleet", "FleetStats", "Healer", "RetryPolicy", "decode_webhook",
    "error_type", "format_table", "run_simulation",
]
