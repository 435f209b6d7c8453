"""Traces: with an OTLP endpoint set, a run is one trace (its run span, its steps, task attempts,
tool calls and model calls with `gen_ai.*` attributes) that a real exporter delivers to an
OTLP/HTTP receiver; with none set, nothing of the SDK is even imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from bot import tracing
from bot.runs import lifecycle
from bot.settings import Settings
from bot.store.db import create_engine
from bot.store.models import Run, RunState
from tests.doubles.fixtures import REPOSITORY
from tests.doubles.models import ModelReply, RecordedCall
from tests.doubles.otlp import OtlpReceiver, ReceivedSpan
from tests.support import wait_for
from tests.world import FOUR_TASKS, ISSUE, approved, models_for, wait_for_run, world_of

OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A receiver that Baton's exporter sends to, in batches a moment apart."""
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        yield receiver


def ids_of(run_id: str) -> tuple[str, str]:
    trace_id, span_id = tracing.run_ids(run_id)
    return f"{trace_id:032x}", f"{span_id:016x}"


def only_run(engine: sa.Engine) -> Run:
    with Session(engine) as session:
        (run,) = session.exec(select(Run)).all()
        return run


def model_calls(
    engine: sa.Engine, run_id: str
) -> list[sa.Row[tuple[str, str, int, int, int, int]]]:
    query = sa.text(
        "SELECT provider, model, input_tokens, output_tokens, cache_read_tokens, "
        "cache_write_tokens FROM model_calls WHERE run_id = :run"
    )
    with engine.connect() as connection:
        return list(connection.execute(query, {"run": run_id}).all())


def finished_jobs_of(engine: sa.Engine, run_id: str) -> set[int]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, args, state FROM jobs")).all()
    found = set()
    for job_id, args, state in rows:
        arguments = json.loads(args) if isinstance(args, str) else args
        if arguments.get("run_id") == run_id and state == "succeeded":
            found.add(job_id)
    return found


def with_cache(
    policy: Callable[[RecordedCall], ModelReply],
) -> Callable[[RecordedCall], ModelReply]:
    """The same answers, each served partly from the provider's prompt cache."""
    return lambda call: policy(call)._replace(cache_read_tokens=120, cache_write_tokens=30)


def ancestry(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    """The names of the span's ancestors, nearest first; fails on a parent the trace lacks."""
    names = []
    while span.parent_span_id:
        assert span.parent_span_id in by_id, f"{span.name} has a parent missing from its trace"
        span = by_id[span.parent_span_id]
        names.append(span.name)
    return names


def test_a_run_is_one_trace_of_its_steps_attempts_tool_calls_and_model_calls(
    receiver: OtlpReceiver, tmp_path: Path, settings: Settings, engine: sa.Engine
) -> None:
    with world_of(tmp_path, settings) as world:
        approved(world, engine, with_cache(models_for(FOUR_TASKS)))
        wait_for_run(world, engine, "pr_open")
        (pull,) = world.github.pulls(REPOSITORY)
        world.github.close_pull_request(world.url, REPOSITORY, pull["number"])
        wait_for(lambda: only_run(engine).state == "closed", timeout=60)
    # The world has stopped, and Baton with it: everything it batched has been sent.
    run = only_run(engine)
    trace_id, run_span_id = ids_of(run.id)
    spans = receiver.spans()
    trace = [span for span in spans if span.trace_id == trace_id]
    by_id = {span.span_id: span for span in trace}
    names = Counter(span.name for span in trace)

    # One run span, with the id its run gives, though the run went on to close its PR.
    (run_span,) = [span for span in trace if span.name == tracing.RUN_SPAN]
    assert (run_span.span_id, run_span.parent_span_id) == (run_span_id, "")
    assert run_span.attributes == {
        "baton.run.id": run.id,
        "baton.repository": REPOSITORY,
        "baton.issue.number": ISSUE,
        "baton.run.mode": "orchestrated",
        "baton.run.state": "pr_open",
    }
    assert run_span.resource["service.name"] == "baton"
    assert run_span.start_ns <= min(span.start_ns for span in trace if span is not run_span)
    # Whatever names the run is in this trace, and every span of it descends from the run's.
    marked = {span.trace_id for span in spans if span.attributes.get("baton.run.id") == run.id}
    assert marked == {trace_id}
    for span in trace:
        if span is not run_span:
            assert ancestry(span, by_id)[-1] == tracing.RUN_SPAN

    # A step span for every job of the run that finished, under the run span.
    steps = {
        span.attributes["baton.job.id"]: span for span in trace if span.name.startswith("step ")
    }
    assert finished_jobs_of(engine, run.id) <= set(steps)
    assert all(span.parent_span_id == run_span_id for span in steps.values())
    assert names["step plan_run"] >= 1

    # Four attempts, one per task, each inside its step.
    attempts = [span for span in trace if span.name == "invoke_agent implementer"]
    assert sorted(span.attributes["baton.task.key"] for span in attempts) == [
        "T1",
        "T2",
        "T3",
        "T4",
    ]
    assert all(by_id[span.parent_span_id].name == "step attempt_task" for span in attempts)
    attempt_ids = {span.span_id for span in attempts}

    # Each worker wrote its file and finished: two tool calls, inside its attempt.
    for tool in ("write_file", "finish"):
        calls = [span for span in trace if span.name == f"execute_tool {tool}"]
        assert len(calls) == 4
        assert all(span.attributes["gen_ai.tool.name"] == tool for span in calls)
        assert all(span.attributes["gen_ai.operation.name"] == "execute_tool" for span in calls)
        assert {span.parent_span_id for span in calls} == attempt_ids

    # One chat span per recorded model call, with the same models and tokens.
    chats = [span for span in trace if span.attributes.get("gen_ai.operation.name") == "chat"]
    recorded = model_calls(engine, run.id)
    assert len(chats) == len(recorded) > 0
    assert Counter(
        (span.attributes["gen_ai.system"], span.attributes["gen_ai.request.model"])
        for span in chats
    ) == Counter((row[0], row[1]) for row in recorded)
    spent = {
        "gen_ai.usage.input_tokens": sum(row[2] + row[4] + row[5] for row in recorded),
        "gen_ai.usage.output_tokens": sum(row[3] for row in recorded),
        "gen_ai.usage.cache_read.input_tokens": sum(row[4] for row in recorded),
        "gen_ai.usage.cache_creation.input_tokens": sum(row[5] for row in recorded),
    }
    assert spent["gen_ai.usage.output_tokens"] > 0
    assert spent["gen_ai.usage.cache_read.input_tokens"] == 120 * len(recorded)
    for attribute, total in spent.items():
        assert sum(span.attributes[attribute] for span in chats) == total, attribute
    # The workers' calls sit in their attempts; the planner's and reviewers' in their steps.
    in_attempts = [span for span in chats if span.parent_span_id in attempt_ids]
    assert len(in_attempts) == 8
    assert all(span.name == f"chat {span.attributes['gen_ai.request.model']}" for span in chats)


def test_a_run_that_ends_without_a_pull_request_has_its_span_at_its_end(
    receiver: OtlpReceiver, database_url: str
) -> None:
    engine = create_engine(database_url)
    assert tracing.start_tracing()
    try:
        with Session(engine) as session:
            session.add(
                Run(id="r-traced", repository_id=1, repository="octo/widgets", issue_number=3)
            )
            session.commit()
            lifecycle.end_run(session, "r-traced", RunState.failed, "the planner gave up")
            session.rollback()  # nothing committed: nothing traced
            assert lifecycle.end_run(session, "r-traced", RunState.failed, "the planner gave up")
            session.commit()
    finally:
        tracing.stop_tracing()
        engine.dispose()
    (span,) = [span for span in receiver.spans() if span.name == tracing.RUN_SPAN]
    assert (span.trace_id, span.span_id) == ids_of("r-traced")
    assert span.attributes["baton.run.state"] == "failed"


def test_with_no_endpoint_nothing_of_the_sdk_is_loaded_and_every_span_is_the_shared_no_op() -> None:
    environment = {key: value for key, value in os.environ.items() if key not in OTEL_VARIABLES}
    program = (
        "import sys\n"
        "from bot import tracing\n"
        "import bot.service, webhooks.app\n"
        "assert not tracing.start_tracing() and not tracing.tracing_on()\n"
        "assert tracing.step_span('plan_run', 1, 1, 'r') is tracing.OFF\n"
        "assert tracing.chat_span('anthropic', 'm', 10) is tracing.OFF\n"
        "tracing.emit_run_span(None)\n"  # off, it does not even look at its argument
        "loaded = [name for name in sys.modules if name.startswith(('opentelemetry.sdk', "
        "'opentelemetry.exporter'))]\n"
        "print(loaded)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    assert shown.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_with_an_endpoint_and_the_sdk_not_disabled(
    variables: dict[str, str], expected: bool
) -> None:
    assert tracing.endpoint_configured(variables) is expected
