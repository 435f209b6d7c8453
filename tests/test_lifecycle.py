"""The run's life: every allowed change of a run's or task's state is made, with its timeline
event and next jobs in the same transaction; every other change is refused; a change that lost
a race writes nothing; and no module but the lifecycle assigns a state."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.runs import lifecycle
from bot.store.db import create_engine
from bot.store.models import (
    Job,
    JobState,
    PlanRevision,
    Run,
    RunState,
    Task,
    TaskState,
    TimelineEvent,
)
from bot.store.types import utcnow

ROOT = Path(__file__).resolve().parent.parent
RUN_PAIRS = list(itertools.product(RunState, RunState))
TASK_PAIRS = list(itertools.product(TaskState, TaskState))


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = create_engine(database_url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def a_run(session: Session, state: RunState, issue: int = 7) -> str:
    run_id = f"run-{state}"
    session.add(
        Run(
            id=run_id,
            repository_id=1,
            repository="octo/widgets",
            issue_number=issue,
            state=state,  # a row made for the test, in the state under test
            active=state not in lifecycle.ENDED,
        )
    )
    session.flush()
    return run_id


def a_task(session: Session, run_id: str, state: TaskState) -> str:
    revision = PlanRevision(run_id=run_id, number=1)
    session.add(revision)
    session.flush()
    session.add(
        Task(
            run_id=run_id,
            revision_id=revision.id or 0,
            key="T1",
            title="t",
            role="implementer",
            state=state,
        )
    )
    session.flush()
    return "T1"


def jobs(session: Session) -> list[str]:
    return sorted(session.exec(select(Job.name).where(Job.state == JobState.queued)).all())


def events(session: Session) -> list[str]:
    return list(session.exec(select(TimelineEvent.kind).order_by(col(TimelineEvent.id))).all())


def test_every_run_change_is_made_or_refused(session: Session) -> None:
    for old, new in RUN_PAIRS:
        trial = session.begin_nested()  # each pair from a clean slate
        check_run_change(session, old, new)
        trial.rollback()


def test_every_task_change_is_made_or_refused(session: Session) -> None:
    for old, new in TASK_PAIRS:
        trial = session.begin_nested()
        check_task_change(session, old, new)
        trial.rollback()


def check_run_change(session: Session, old: RunState, new: RunState) -> None:
    run_id = a_run(session, old)
    if new not in lifecycle.RUN_MOVES[old]:
        with pytest.raises(lifecycle.IllegalMove):
            lifecycle.move_run(session, run_id, old, new, "test")
        session.expire_all()
        assert session.get(Run, run_id).state == old  # type: ignore[union-attr]
        assert events(session) == []
        assert jobs(session) == []
        return
    assert lifecycle.move_run(session, run_id, old, new, "test")
    session.expire_all()
    run = session.get(Run, run_id)
    assert run is not None
    assert run.state == new
    assert events(session) == [f"run.{new}"]
    queued = jobs(session)
    assert lifecycle.STATUS_JOB in queued  # every change is shown
    assert run.active == (new not in lifecycle.ENDED)
    if new in lifecycle.ENDED:
        assert lifecycle.CLEAR_RUN_JOB in queued
        assert run.ended_at is not None
    if new in (RunState.executing, RunState.revising):
        assert lifecycle.ADVANCE_JOB in queued
    if new == RunState.planning:
        assert lifecycle.PLAN_JOB in queued


def check_task_change(session: Session, old: TaskState, new: TaskState) -> None:
    run_id = a_run(session, RunState.executing)
    key = a_task(session, run_id, old)
    if new not in lifecycle.TASK_MOVES[old]:
        with pytest.raises(lifecycle.IllegalMove):
            lifecycle.move_task(session, run_id, key, old, new, "test")
        session.expire_all()
        assert session.exec(select(Task.state)).one() == old
        assert events(session) == []
        assert jobs(session) == []
        return
    assert lifecycle.move_task(session, run_id, key, old, new, "test", feedback="why")
    session.expire_all()
    task = session.exec(select(Task)).one()
    assert task.state == new
    assert events(session) == [f"task.{new}"]
    queued = jobs(session)
    assert lifecycle.STATUS_JOB in queued
    expected = {
        TaskState.running: lifecycle.ATTEMPT_JOB,
        TaskState.accepted: lifecycle.INTEGRATE_JOB,
        TaskState.pending: lifecycle.ADVANCE_JOB,
        TaskState.integrated: lifecycle.ADVANCE_JOB,
        TaskState.skipped: lifecycle.ADVANCE_JOB,
        TaskState.failed: lifecycle.ADVANCE_JOB,
        TaskState.escalated: lifecycle.ADVANCE_JOB,
    }.get(new)
    if expected is not None:
        assert expected in queued
    if new == TaskState.running:
        assert task.feedback == "why"  # what the next attempt is told


def test_a_change_that_lost_a_race_writes_nothing(session: Session) -> None:
    """Compare-and-set: the run is no longer in the state the caller saw, so nothing happens."""
    run_id = a_run(session, RunState.cancelled)
    assert not lifecycle.move_run(session, run_id, RunState.executing, RunState.pr_open)
    key = a_task(session, run_id, TaskState.cancelled)
    assert not lifecycle.move_task(session, run_id, key, TaskState.running, TaskState.reviewing)
    session.expire_all()
    assert session.get(Run, run_id).state == RunState.cancelled  # type: ignore[union-attr]
    assert events(session) == []
    assert jobs(session) == []


def test_ending_a_run_closes_its_tasks_and_stops_its_jobs(session: Session) -> None:
    run_id = a_run(session, RunState.executing)
    a_task(session, run_id, TaskState.running)
    now = utcnow()
    session.add(
        Job(
            name=lifecycle.ATTEMPT_JOB,
            args={"run_id": run_id},
            run_id=run_id,
            state=JobState.running,
            run_after=now,
            created_at=now,
        )
    )
    session.flush()
    assert lifecycle.end_run(session, run_id, RunState.cancelled, "cancelled by @alice")
    assert not lifecycle.end_run(session, run_id, RunState.failed, "too late")  # ended once
    session.expire_all()
    assert session.exec(select(Task.state)).one() == TaskState.cancelled
    attempt_job = session.exec(select(Job).where(Job.name == lifecycle.ATTEMPT_JOB)).one()
    assert attempt_job.abort_requested
    run = session.get(Run, run_id)
    assert run is not None
    assert run.error == "cancelled by @alice"
    assert not run.active


# What assigns a state: `x.state = …` (alone or in a tuple), and `state=` / `"state":` given a
# RunState or TaskState value (a row inserted or an UPDATE's values).
def _assigns_state(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign):
        targets = [
            element
            for target in node.targets
            for element in (target.elts if isinstance(target, ast.Tuple) else [target])
        ]
        return any(isinstance(t, ast.Attribute) and t.attr == "state" for t in targets)
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return isinstance(node.target, ast.Attribute) and node.target.attr == "state"
    if isinstance(node, ast.keyword) and node.arg == "state":
        return _names_a_state(node.value)
    if isinstance(node, ast.Dict):
        return any(
            isinstance(k, ast.Constant) and k.value == "state" and _names_a_state(v)
            for k, v in zip(node.keys, node.values, strict=True)
        )
    return False


def _names_a_state(value: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Name) and n.id in ("RunState", "TaskState") for n in ast.walk(value)
    )


def state_writers() -> list[str]:
    found = []
    for path in sorted([*(ROOT / "bot").rglob("*.py"), *(ROOT / "webhooks").rglob("*.py")]):
        if path == ROOT / "bot" / "runs" / "lifecycle.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(tree)
            if _assigns_state(node) and hasattr(node, "lineno")
        ]
    return found


def test_only_the_lifecycle_assigns_a_state() -> None:
    assert state_writers() == []


def test_the_state_writer_check_finds_what_it_looks_for() -> None:
    """The check above can fail: each form of assignment is found."""
    for source in (
        "run.state = RunState.done",
        "task.state, task.updated_at = TaskState.failed, now",
        "sa.update(RUNS).values(state=RunState.done)",
        "row = {'state': TaskState.pending}",
        "Task(key='T1', state=TaskState.pending)",
    ):
        tree = ast.parse(source)
        assert any(_assigns_state(node) for node in ast.walk(tree)), source
    assert not any(
        _assigns_state(node) for node in ast.walk(ast.parse("values(state=JobState.queued)"))
    )


def test_the_tables_name_every_state() -> None:
    assert set(lifecycle.RUN_MOVES) == set(RunState)
    assert set(lifecycle.TASK_MOVES) == set(TaskState)
    never_entered = set(RunState) - {RunState.planning} - set().union(*lifecycle.RUN_MOVES.values())
    assert never_entered == set()
    entered = set().union(*lifecycle.TASK_MOVES.values()) | {TaskState.pending}
    assert entered == set(TaskState)


def test_a_run_without_a_row_is_not_moved(session: Session) -> None:
    assert not lifecycle.move_run(session, "nobody", RunState.executing, RunState.pr_open)
    assert session.exec(select(sa.func.count()).select_from(TimelineEvent)).one() == 0


def test_a_slot_coming_free_wakes_every_run_with_a_task_waiting_to_start(session: Session) -> None:
    busy = a_run(session, RunState.executing)
    waiting = a_run(session, RunState.revising, issue=8)
    waiting_for_a_person = a_run(session, RunState.awaiting_approval, issue=9)
    a_task(session, busy, TaskState.running)
    a_task(session, waiting, TaskState.pending)
    a_task(session, waiting_for_a_person, TaskState.pending)

    lifecycle.move_task(session, busy, "T1", TaskState.running, TaskState.reviewing)
    assert advances_asked(session) == set()  # still holding its slot

    lifecycle.move_task(session, busy, "T1", TaskState.reviewing, TaskState.accepted)
    assert advances_asked(session) == {waiting}


def advances_asked(session: Session) -> set[str]:
    found = session.exec(
        select(Job.args).where(Job.name == lifecycle.ADVANCE_JOB, Job.state == JobState.queued)
    ).all()
    return {args["run_id"] for args in found}
