"""Alertmanager's webhook notification (payload version 4), as it posts one to /v1/alertmanager."""


def notification(status, agent="coder"):
    """One OrchestratorAgentHighErrorRatio alert for `agent`, `status` "firing" or "resolved"."""
    return {
        "version": "4", "groupKey": "{}:{alertname=\"OrchestratorAgentHighErrorRatio\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "healing", "groupLabels": {"alertname": "OrchestratorAgentHighErrorRatio"},
        "commonLabels": {"alertname": "OrchestratorAgentHighErrorRatio", "agent": agent},
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": status,
                    "labels": {"alertname": "OrchestratorAgentHighErrorRatio", "agent": agent, "severity": "critical"},
                    "annotations": {"summary": "coder fails"}, "startsAt": "2024-05-01T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T10:05:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "0123456789abcdef"}],
    }
