"""Logging, metrics, OpenTelemetry and the request middleware: kept out of business logic."""
