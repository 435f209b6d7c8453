"""OpenTelemetry traces of runs, exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; off otherwise.

One trace per run. Its trace id, and the id of its run span, derive from the run id, so every
process that works on the run (`baton serve`, any `baton worker`, before and after a restart)
adds its spans to the same trace without passing anything along. The run span is written once,
when the run first reaches its draft pull request (or ends without one), spanning from the run's
creation; steps, task attempts, tool calls and model calls are its descendants. Model calls carry
the GenAI semantic conventions (`gen_ai.*`).

Spans hold names, ids, models and token counts: never a prompt, a tool's arguments or output, or
an error's text, which may quote repository content or a provider's words.

Off, nothing of the SDK is imported and every helper returns one shared no-op context manager.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bot.llm.types import Usage

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
RUN_SPAN = "baton.run"
OFF: AbstractContextManager[None] = nullcontext()
_PENDING = "baton_run_spans"  # the session's run spans that wait for its commit

# The ids the next span started in this context must take: the run span's, derived from its run.
_FIXED_IDS: ContextVar[tuple[int, int] | None] = ContextVar("baton_fixed_span_ids", default=None)


@dataclass
class _Tracing:
    provider: TracerProvider
    tracer: Tracer
    users: int = 1


_lock = threading.Lock()
_active: _Tracing | None = None


def endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether traces are to be exported: an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def start_tracing(service_version: str = "") -> bool:
    """Starts exporting, once per process however many parts ask; False (nothing created) when
    no endpoint is set. Each True start is matched by one `stop_tracing`."""
    global _active
    if not endpoint_configured():
        return False
    with _lock:
        if _active is not None:
            _active.users += 1
            return True
        provider = _provider(service_version)
        _active = _Tracing(provider, provider.get_tracer("baton", service_version))
    return True


def stop_tracing() -> None:
    """Flushes and ends exporting when the last part that started it stops."""
    global _active
    with _lock:
        if _active is None:
            return
        _active.users -= 1
        if _active.users > 0:
            return
        provider, _active = _active.provider, None
    provider.shutdown()  # exports what is still batched


def tracing_on() -> bool:
    return _active is not None


def run_ids(run_id: str) -> tuple[int, int]:
    """The run's trace id (128 bits) and its run span's id (64 bits), never zero."""
    digest = hashlib.sha256(f"baton-run:{run_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def step_span(
    job_name: str, job_id: int, attempt: int, run_id: object
) -> AbstractContextManager[Any]:
    """A job's run: a child of its run's span when it works on a run, a trace of its own if not."""
    if _active is None:
        return OFF
    attributes: dict[str, Any] = {
        "baton.step.name": job_name,
        "baton.job.id": job_id,
        "baton.job.attempt": attempt,
    }
    parent = None
    if isinstance(run_id, str):
        attributes["baton.run.id"] = run_id
        parent = _run_context(run_id)
    return _span(f"step {job_name}", attributes, parent)


def attempt_span(run_id: str, task_key: str, role: str, number: int) -> AbstractContextManager[Any]:
    """One worker's attempt at a task: an agent invocation in the GenAI conventions."""
    if _active is None:
        return OFF
    attributes = {
        "baton.run.id": run_id,
        "baton.task.key": task_key,
        "baton.attempt.number": number,
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": role,
    }
    return _span(f"invoke_agent {role}", attributes)


def tool_span(tool_name: str, call_id: str) -> AbstractContextManager[Any]:
    if _active is None:
        return OFF
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.id": call_id,
    }
    return _span(f"execute_tool {tool_name}", attributes)


def chat_span(provider: str, model: str, max_tokens: int) -> AbstractContextManager[Any]:
    """A model call; `record_answer` adds what came back to the span this yields."""
    if _active is None:
        return OFF
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": provider,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": max_tokens,
    }
    return _span(f"chat {model}", attributes)


def record_answer(span: Any, usage: Usage, stop_reason: str | None) -> None:
    """Tokens of a model call on its span. Input counts cached tokens too, as the conventions
    ask; the cached ones are also given apart."""
    if span is None:
        return
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": usage.input_tokens + cached,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
        }
    )
    if stop_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [stop_reason])


@dataclass(frozen=True)
class RunSummary:
    """What the run span says about its run."""

    run_id: str
    repository: str
    issue_number: int
    mode: str
    state: str
    created_at: datetime


def emit_run_span(run: RunSummary) -> None:
    """The run's own span, from its creation until now; a no-op when tracing is off."""
    tracing = _active
    if tracing is None:
        return
    from opentelemetry.context import Context

    attributes: dict[str, Any] = {
        "baton.run.id": run.run_id,
        "baton.repository": run.repository,
        "baton.issue.number": run.issue_number,
        "baton.run.mode": run.mode,
        "baton.run.state": run.state,
    }
    token = _FIXED_IDS.set(run_ids(run.run_id))
    try:
        span = tracing.tracer.start_span(
            RUN_SPAN, Context(), attributes=attributes, start_time=_nanoseconds(run.created_at)
        )
    finally:
        _FIXED_IDS.reset(token)
    span.end()


def emit_run_span_on_commit(session: Session, run: RunSummary) -> None:
    """The run span, written if and when the session's transaction commits."""
    session.info.setdefault(_PENDING, []).append(run)
    if not sa.event.contains(session, "after_commit", _emit_pending):
        sa.event.listen(session, "after_commit", _emit_pending)
        # Any rollback, a savepoint's too, forgets them: a span lost, never one written twice.
        sa.event.listen(session, "after_soft_rollback", _forget_pending)


def _emit_pending(session: Session) -> None:
    for run in session.info.pop(_PENDING, []):
        emit_run_span(run)


def _forget_pending(session: Session, _previous: object) -> None:
    session.info.pop(_PENDING, None)


@contextmanager
def _span(
    name: str, attributes: Mapping[str, Any], parent: Context | None = None
) -> Iterator[Span]:
    from opentelemetry.trace import Status, StatusCode

    assert _active is not None
    with _active.tracer.start_as_current_span(
        name,
        parent,
        attributes=attributes,
        record_exception=False,  # an error's text may quote what must not leave the machine
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            raise


def _run_context(run_id: str) -> Context:
    """A context whose current span is the run's, wherever and whenever that span is written."""
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        set_span_in_context,
    )

    trace_id, span_id = run_ids(run_id)
    run = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return set_span_in_context(NonRecordingSpan(run))


def _provider(service_version: str) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunIds(RandomIdGenerator):
        """Random ids, except for a run span, whose ids its run determines."""

        def generate_trace_id(self) -> int:
            fixed = _FIXED_IDS.get()
            return fixed[0] if fixed else super().generate_trace_id()

        def generate_span_id(self) -> int:
            fixed = _FIXED_IDS.get()
            return fixed[1] if fixed else super().generate_span_id()

    # The resource and the exporter read the standard OTEL_* variables (resource attributes,
    # headers, timeout, certificates) themselves; OTEL_SERVICE_NAME, when set, names the service.
    named = {"service.version": service_version}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        named["service.name"] = "baton"
    resource = Resource.create(named)
    provider = TracerProvider(resource=resource, id_generator=RunIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _nanoseconds(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1_000_000_000)
