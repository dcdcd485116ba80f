"""Logs (structlog) and Prometheus metrics: what an on-call engineer needs."""
