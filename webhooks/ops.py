"""Health, readiness and metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from bot.disk import disk_problem
from bot.metrics import CONTENT_TYPE
from bot.store.migrate import current_revision, head_revision
from webhooks.deps import BatonDep

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(baton: BatonDep) -> JSONResponse:
    """The data directory's disk has room, the database answers and its schema is at the
    newest migration."""
    settings = baton.settings
    disk = await run_in_threadpool(disk_problem, settings.data_dir, settings.min_free_disk_mb)
    if disk is not None:
        log.warning("not ready: %s", disk)
        return JSONResponse({"status": "unavailable", "disk": disk}, status_code=503)
    try:
        revision = await run_in_threadpool(current_revision, baton.store.engine)
    except Exception as error:
        log.warning("database unreachable: %s", error)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    expected = head_revision()
    if revision != expected:
        behind = {"status": "unavailable", "migrations": f"at {revision}, need {expected}"}
        return JSONResponse(behind, status_code=503)
    body: dict[str, object] = {"status": "ready", "migrations": revision}
    if settings.executor == "procrastinate":
        from bot.executor.relayed import queue_figures

        # Ready to take webhooks whatever the workers do; the queue is shown, not judged.
        figures = await run_in_threadpool(queue_figures, baton.store.engine)
        body["queue"] = {"workers_alive": figures.workers_alive, "stalled_jobs": figures.stalled}
    return JSONResponse(body)


@router.get("/metrics")
async def metrics(baton: BatonDep) -> Response:
    """Prometheus text format."""
    return Response(await run_in_threadpool(baton.metrics.render), media_type=CONTENT_TYPE)
