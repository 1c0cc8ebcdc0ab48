"""What operators see of a running OrderPulse: Prometheus metrics, request ids and logs."""
