"""The HTTP edge: webhook endpoint, setup pages, dashboard, health and metrics."""
