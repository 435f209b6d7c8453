"""Health, readiness, metrics and the setup page."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import sqlalchemy as sa

from bot.settings import Settings
from tests.support import FAST, SECRET, delivery_headers, payload, serve, wait_for
from webhooks.access import OperatorAccess
from webhooks.app import create_app


def test_health_and_readiness_on_a_migrated_database(baton_url: str) -> None:
    assert httpx.get(f"{baton_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{baton_url}/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


def test_not_ready_until_migrated(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, webhook_secret=SECRET)  # type: ignore[call-arg]
    with serve(create_app(settings, FAST)) as url:
        health = httpx.get(f"{url}/healthz")
        ready = httpx.get(f"{url}/readyz")

    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["migrations"].startswith("at None, need ")


def test_not_ready_when_the_database_is_unreachable(tmp_path: Path) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    settings = Settings(_env_file=None, database_url=unreachable, webhook_secret=SECRET)  # type: ignore[call-arg]
    body = json.dumps(payload("issues.labeled")).encode()
    with serve(create_app(settings, FAST)) as url:
        ready = httpx.get(f"{url}/readyz", timeout=30)
        delivery = httpx.post(
            f"{url}/api/github/webhooks",
            content=body,
            headers=delivery_headers("issues", "d-1", body),
            timeout=30,
        )

    assert (ready.status_code, ready.json()["database"]) == (503, "unreachable")
    assert delivery.status_code == 503
    assert "could not store the delivery" in delivery.json()["detail"]


def test_metrics_count_deliveries_and_jobs(baton_url: str, engine: sa.Engine) -> None:
    body = json.dumps(payload("installation.created")).encode()
    for delivery in ("m-1", "m-1"):
        httpx.post(
            f"{baton_url}/api/github/webhooks",
            content=body,
            headers=delivery_headers("installation", delivery, body),
        )

    def scraped() -> str | None:
        text = httpx.get(f"{baton_url}/metrics").text
        return text if 'baton_jobs{state="succeeded"} 1.0' in text else None

    text = wait_for(scraped)
    lines = [line for line in text.splitlines() if line.startswith("baton_")]
    for expected in (
        'baton_webhook_deliveries_total{event="installation",outcome="queued"} 1.0',
        'baton_webhook_deliveries_total{event="installation",outcome="duplicate"} 1.0',
        'baton_job_duration_seconds_count{job="sync_installation",outcome="succeeded"} 1.0',
    ):
        assert expected in lines, "\n".join(lines)


def test_setup_mode_without_app_credentials(settings: Settings) -> None:
    operator = OperatorAccess(setup_mode=True)
    with serve(create_app(settings, FAST, operator=operator)) as url:
        stranger = httpx.get(f"{url}/")
        with httpx.Client(base_url=url) as browser:
            browser.get(operator.sign_in_link(url))
            page = browser.get("/")

    assert stranger.status_code == 403
    assert page.status_code == 200
    assert "setup mode" in page.text


def test_not_ready_when_the_data_disk_is_nearly_full(settings: Settings) -> None:
    # The floor is set above the space this disk has, as if the disk were nearly full.
    crowded = settings.model_copy(update={"min_free_disk_mb": 1 << 40})
    with serve(create_app(crowded, FAST)) as url:
        ready = httpx.get(f"{url}/readyz")

    assert ready.status_code == 503
    assert ready.json()["disk"].startswith("nearly full: ")
    assert "BATON_MIN_FREE_DISK_MB" in ready.json()["disk"]
