"""The store on both backends: migrations, constraints, and values that round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from bot.store.db import Store, insert_ignoring_conflicts
from bot.store.migrate import current_revision, head_revision, is_current
from bot.store.models import Delivery, Run, RunState
from tests.support import is_the_queues, model_drift


def a_run(run_id: str, issue: int = 1, *, active: bool = True) -> Run:
    return Run(
        id=run_id,
        repository_id=2**40,  # GitHub ids outgrew 32 bits
        repository="octo-org/widgets",
        issue_number=issue,
        active=active,
        state=RunState.planning if active else RunState.done,
    )


def test_migrations_are_at_head_and_match_the_models(engine: sa.Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert is_current(engine)
    tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    assert {name for name in tables if not is_the_queues(name)} == set(SQLModel.metadata.tables)
    # Every column, type and index the models declare is what the migrations built.
    with engine.connect() as connection:
        assert model_drift(connection) == []


def test_one_active_run_per_issue_is_enforced_by_the_database(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(a_run("old", active=False))
        session.add(a_run("first"))
        session.add(a_run("other-issue", issue=2))
        session.commit()
        session.add(a_run("second"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_times_come_back_aware_in_utc(engine: sa.Engine) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with Session(engine) as session:
        session.add(Delivery(delivery_id="d", event="ping", outcome="ignored", received_at=moment))
        session.commit()
    with Session(engine) as session:
        stored = session.exec(sa.select(Delivery)).scalar_one()  # type: ignore[call-overload]
    assert stored.received_at == moment
    assert stored.received_at.tzinfo == UTC


def test_naive_times_are_refused(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(
            Delivery(
                delivery_id="d", event="ping", outcome="ignored", received_at=datetime(2026, 1, 1)
            )
        )
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.commit()


def test_insert_ignoring_conflicts_reports_only_new_rows(engine: sa.Engine) -> None:
    def row(delivery_id: str) -> dict[str, object]:
        return {
            "delivery_id": delivery_id,
            "event": "ping",
            "outcome": "ignored",
            "received_at": datetime.now(UTC),
        }

    with engine.begin() as connection:
        first = insert_ignoring_conflicts(
            connection, Delivery, [row("a"), row("b")], returning=("delivery_id", "id")
        )
        second = insert_ignoring_conflicts(
            connection, Delivery, [row("b"), row("c"), row("c")], returning=("delivery_id", "id")
        )

    assert set(first) == {"a", "b"}
    assert set(second) == {"c"}
    assert len(set(first.values()) | set(second.values())) == 3


async def test_store_run_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    store = Store(database_url)

    def add_and_fail(session: Session) -> None:
        session.add(a_run("rolled-back", issue=2))
        session.flush()
        raise RuntimeError("boom")

    await store.run(lambda session: session.add(a_run("kept")))
    with pytest.raises(RuntimeError, match="boom"):
        await store.run(add_and_fail)

    ids = await store.run(
        lambda session: [run.id for run in session.exec(sa.select(Run)).scalars()]
    )  # type: ignore[call-overload]
    store.close()
    assert ids == ["kept"]
