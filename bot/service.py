"""The running parts of one Baton process, started and stopped together."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version

import sqlalchemy as sa

from bot.executor import Executor
from bot.executor.local import ExecutorTuning, LocalExecutor
from bot.failures import on_job_gave_up
from bot.ingress import DeliveryRecorder
from bot.integrations import Integrations
from bot.jobs import JOBS
from bot.metrics import Metrics
from bot.retention import PRUNE_JOB
from bot.runs.lifecycle import ATTEMPT_JOB
from bot.settings import Settings, SettingsError
from bot.store.db import Store
from bot.store.models import Job
from bot.tracing import start_tracing, stop_tracing


def executor_problem(settings: Settings) -> str | None:
    """Why the configured executor cannot run with these settings, if it cannot."""
    url = sa.engine.make_url(settings.resolved_database_url)
    if settings.executor == "procrastinate" and url.get_backend_name() != "postgresql":
        return (
            "BATON_EXECUTOR='procrastinate' needs PostgreSQL: set BATON_DATABASE_URL to a "
            "postgresql+psycopg:// database every machine reaches, or use BATON_EXECUTOR=local"
        )
    return None


class Baton:
    """Store, metrics, executor and delivery recorder of one process."""

    def __init__(
        self,
        settings: Settings,
        tuning: ExecutorTuning | None = None,
        integrations: Integrations | None = None,
    ) -> None:
        self.settings = settings
        self.integrations = integrations or Integrations.from_settings(settings)
        self.store = Store(settings.resolved_database_url)
        self.metrics = Metrics()
        self.metrics.watch_job_states(self._count_jobs_by_state)
        self.recorder = DeliveryRecorder(self.store, on_jobs_committed=self._notify_executor)
        self.executor: Executor = self._make_executor(tuning)
        self._tracing = False

    def _make_executor(self, tuning: ExecutorTuning | None) -> Executor:
        problem = executor_problem(self.settings)
        if problem:
            raise SettingsError(problem)
        if self.settings.executor == "procrastinate":
            from bot.executor.relayed import RelayedExecutor, queue_figures  # PostgreSQL only

            self.metrics.watch_queue(lambda: queue_figures(self.store.engine))
            return RelayedExecutor(
                self.store,
                self.settings,
                JOBS,
                self.metrics,
                tuning,
                self.integrations,
                on_gave_up=on_job_gave_up,
                housekeeping=[PRUNE_JOB],
                long_jobs=[ATTEMPT_JOB],
            )
        return LocalExecutor(
            self.store,
            self.settings,
            JOBS,
            self.metrics,
            tuning,
            self.recorder.busy,
            self.integrations,
            on_gave_up=on_job_gave_up,
            housekeeping=[PRUNE_JOB],
            long_jobs=[ATTEMPT_JOB],
        )

    def _notify_executor(self) -> None:
        self.executor.notify()

    async def start(self) -> None:
        self._tracing = start_tracing(version("baton-bot"))
        self.recorder.start()
        await self.executor.start()

    async def stop(self) -> None:
        await self.recorder.stop()
        await self.executor.stop()
        self.store.close()
        if self._tracing:
            stop_tracing()  # after the executor: the last steps' spans go out too

    def _count_jobs_by_state(self) -> Mapping[str, int]:
        jobs: sa.Table = Job.__table__  # type: ignore[attr-defined]
        query = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        with self.store.engine.connect() as connection:
            return dict(connection.execute(query).all())
