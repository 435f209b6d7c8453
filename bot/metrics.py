"""Prometheus metrics. Each app has its own registry, so several apps in one process never clash."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bot.executor.relayed import QueueFigures

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _JobStates(Collector):
    """Reads the job table at scrape time, so the numbers hold across processes and restarts."""

    def __init__(self, count_by_state: Callable[[], Mapping[str, int]]) -> None:
        self._count_by_state = count_by_state

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("baton_jobs", "Jobs in the store by state", labels=["state"])
        for state, count in sorted(self._count_by_state().items()):
            family.add_metric([state], count)
        yield family


class _Queue(Collector):
    """procrastinate's queue (many machines), read at scrape time."""

    def __init__(self, figures: Callable[[], QueueFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterable[GaugeMetricFamily]:
        figures = self._figures()
        jobs = GaugeMetricFamily(
            "baton_queue_jobs",
            "Jobs in the shared queue by queue and status",
            labels=["queue", "status"],
        )
        for (queue, status), count in sorted(figures.jobs.items()):
            jobs.add_metric([queue, status], count)
        yield jobs
        yield GaugeMetricFamily(
            "baton_queue_stalled_jobs",
            "Jobs running on a worker whose heartbeat stopped",
            value=figures.stalled,
        )
        yield GaugeMetricFamily(
            "baton_queue_workers_alive",
            "Queue workers with a recent heartbeat",
            value=figures.workers_alive,
        )


class Metrics:
    """The counters Baton keeps: deliveries by event and outcome, jobs by state, job durations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "baton_webhook_deliveries",
            "Webhook deliveries answered, by event and outcome",
            ["event", "outcome"],
            registry=self.registry,
        )
        self._delivery_counts: dict[tuple[str, str], Counter] = {}
        self.job_duration = Histogram(
            "baton_job_duration_seconds",
            "Time spent running a job, by job name and outcome",
            ["job", "outcome"],
            registry=self.registry,
        )

    def count_delivery(self, event: str, outcome: str) -> None:
        # The labelled child is cached: looking it up costs more than the increment.
        key = (event, outcome)
        child = self._delivery_counts.get(key)
        if child is None:
            child = self._delivery_counts[key] = self.deliveries.labels(event, outcome)
        child.inc()

    def watch_job_states(self, count_by_state: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_JobStates(count_by_state))

    def watch_queue(self, figures: Callable[[], QueueFigures]) -> None:
        self.registry.register(_Queue(figures))

    def render(self) -> bytes:
        return generate_latest(self.registry)
