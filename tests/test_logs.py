"""JSON log lines carry the ids of the work that wrote them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import MODEL_SDKS, JsonFormatter, configure_logging, log_context


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("baton.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_carry_delivery_and_run_ids_and_extra_fields(lines: io.StringIO) -> None:
    log = logging.getLogger("baton.test")
    with log_context(delivery_id="d-1"):
        log.info("delivery %s", "queued", extra={"event": "issues"})
        with log_context(run_id="r-1"):
            log.info("run started")
        log.info("after the run")
    log.info("outside")

    first, inner, after, outside = records(lines)
    assert first["message"] == "delivery queued"
    assert (first["delivery_id"], first["event"], first["level"]) == ("d-1", "issues", "info")
    assert (inner["delivery_id"], inner["run_id"]) == ("d-1", "r-1")
    assert after["delivery_id"] == "d-1"
    assert "run_id" not in after
    assert "delivery_id" not in outside


def test_exceptions_are_one_json_line(lines: io.StringIO) -> None:
    log = logging.getLogger("baton.test")
    try:
        raise ValueError("plan T4 depends on T9, which does not exist")
    except ValueError:
        log.exception("planning failed")

    [record] = records(lines)
    assert "ValueError: plan T4 depends on T9" in str(record["error"])


def test_debug_logging_leaves_out_the_model_sdks_prompts() -> None:
    root = logging.getLogger()
    touched = [root, *(logging.getLogger(name) for name in (*MODEL_SDKS, "alembic"))]
    saved = [(logger, logger.handlers[:], logger.level) for logger in touched]
    try:
        configure_logging("DEBUG", readable=False)

        assert logging.getLogger("bot.runs.attempt").isEnabledFor(logging.DEBUG)
        for name in MODEL_SDKS:
            assert not logging.getLogger(f"{name}._base_client").isEnabledFor(logging.DEBUG)
            assert logging.getLogger(f"{name}._base_client").isEnabledFor(logging.INFO)
    finally:
        for logger, handlers, level in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
