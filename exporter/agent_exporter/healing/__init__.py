"""Self-healing: retries, fallback chains, circuit breakers, adaptive agent selection.

The pieces compose in a Healer; an AlertRemediator lets Alertmanager open and
close breakers (POST /v1/alertmanager) and reports agent health (GET /v1/agents);
run_simulation compares the policies on a scripted degradation.
"""

from .breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitBreakers, CircuitOpenError
from .fallback import FallbackChain
from .healer import Healer, error_type
from .remediation import AlertRemediator, validate_webhook
from .retry import RetryPolicy
from .selector import AdaptiveSelector
from .simulate import format_table, run_simulation

__all__ = [
    "CLOSED", "HALF_OPEN", "OPEN", "AdaptiveSelector", "AlertRemediator", "CircuitBreaker", "CircuitBreakers",
    "CircuitOpenError", "FallbackChain", "Healer", "RetryPolicy", "error_type", "format_table",
    "run_simulation", "validate_webhook",
]
