"""Logs: JSON lines for a log collector, readable lines for a person at a terminal. Each line
carries the delivery id and run id of the work that wrote it, if any."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

_delivery_id: ContextVar[Any] = ContextVar("delivery_id", default=None)
_run_id: ContextVar[Any] = ContextVar("run_id", default=None)
_job_id: ContextVar[Any] = ContextVar("job_id", default=None)


class LogContext:
    """Sets context ids on enter and restores the outer ones on exit (a class, not a generator:
    it wraps every webhook delivery)."""

    __slots__ = ("_values", "_tokens")

    def __init__(self, values: list[tuple[ContextVar[Any], Any]]) -> None:
        self._values = values
        self._tokens: list[tuple[ContextVar[Any], Token[Any]]] = []

    def __enter__(self) -> None:
        self._tokens = [(var, var.set(value)) for var, value in self._values]

    def __exit__(self, *_exc: object) -> None:
        for var, token in reversed(self._tokens):
            var.reset(token)


def log_context(
    *, delivery_id: str | None = None, run_id: str | None = None, job_id: int | None = None
) -> LogContext:
    """Within the block, log lines carry the given ids (unset ones keep their outer value)."""
    given = ((_delivery_id, delivery_id), (_run_id, run_id), (_job_id, job_id))
    return LogContext([(var, value) for var, value in given if value is not None])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids and `extra` fields."""

    # uvicorn adds `color_message`, the same text with terminal colours.
    _standard = frozenset(logging.makeLogRecord({}).__dict__) | {
        "message",
        "asctime",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("delivery_id", _delivery_id), ("run_id", _run_id), ("job_id", _job_id)):
            value = var.get()
            if value is not None:
                line[key] = value
        for key, value in record.__dict__.items():
            if key not in self._standard and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ReadableFormatter(JsonFormatter):
    """`14:03:07 warning  message  key=value ...`: the same fields, for a person to read."""

    def format(self, record: logging.LogRecord) -> str:
        fields = json.loads(super().format(record))
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        for key in ("time", "logger"):
            fields.pop(key)
        level, message, error = fields.pop("level"), fields.pop("message"), fields.pop("error", "")
        extras = "  ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{clock} {level:<8} {message}" + (f"  {extras}" if extras else "")
        return f"{line}\n{error}" if error else line


MODEL_SDKS = ("anthropic", "openai")


def configure_logging(level: str = "INFO", readable: bool | None = None) -> None:
    """Send every logger (ours, uvicorn's, alembic's) to stderr: readable lines when stderr is a
    terminal (or `readable`), JSON lines otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    if readable is None:
        readable = sys.stderr.isatty()
    handler.setFormatter(ReadableFormatter() if readable else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Alembic narrates every schema check (readiness probes make many); keep its warnings only.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The model SDKs' debug lines hold whole prompts, with whatever a worker wrote (a secret too).
    for name in MODEL_SDKS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
