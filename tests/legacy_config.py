"""The legacy package's config file: where it lived and what it said."""

# Where the legacy package kept it, relative to the working directory.
LEGACY_CONFIG_FILE = ".claude/orchestrator/observability/observability_config.yaml"

# The legacy observability_config.yaml, exactly as the old package shipped it.
LEGACY_YAML = """
observability:
  enabled: true

  tracing:
    enabled: true
    backend: opentelemetry
    export_to_console: true  # For development
    export_to_otlp: false    # Set true when you have OTLP collector
    otlp_endpoint: "http://localhost:4317"

    trace_all_agents: true
    trace_state_transitions: true
    trace_tool_calls: true
    trace_errors: true

    sampling_rate: 1.0  # Trace 100% of requests (reduce in prod if needed)

  metrics:
    enabled: true
    collection_interval: 60  # seconds

  logging:
    level: INFO
    include_traces: true
    format: json  # json or text

  alerting:
    enabled: true
    channels:
      - log
      # - email  # Enable when SMTP configured
      # - slack  # Enable when webhook configured

    conditions:
      - "error_rate > 5%"
      - "latency_p95 > 10000"  # 10 seconds
      - "cost_per_day > 100"

    email:
      smtp_server: "smtp.gmail.com"
      smtp_port: 587
      from_address: "alerts@magnus.com"
      to_addresses:
        - "dev-team@magnus.com"

    slack:
      webhook_url: ""  # Add your Slack webhook URL
"""
