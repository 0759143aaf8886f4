"""Where the service's results go: anomaly events (JSON lines) and Prometheus metrics."""
