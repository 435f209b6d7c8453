"""procrastinate's schema is Baton's to migrate (revision 0007): these fail when the installed
procrastinate and the applied schema drift apart, and show the revision undoes cleanly."""

from __future__ import annotations

import hashlib
import re
from importlib.metadata import version
from importlib.resources import files
from types import ModuleType

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from bot.store.migrate import alembic_config

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def queue_revision() -> ModuleType:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revision = script.get_revision("0007")
    assert revision is not None
    return revision.module


def procrastinate_sql(name: str) -> str:
    return (files("procrastinate.sql") / name).read_text(encoding="utf-8")


def queue_routines(connection: sa.Connection) -> set[str]:
    query = "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%'"
    routines = {row[0] for row in connection.execute(sa.text(query))}
    types = "SELECT typname FROM pg_type WHERE typname LIKE 'procrastinate%'"
    return routines | {row[0] for row in connection.execute(sa.text(types))}


def test_the_installed_procrastinate_is_the_release_the_revision_applied(
    engine: sa.Engine,
) -> None:
    revision = queue_revision()
    assert version("procrastinate").startswith(revision.PROCRASTINATE_SCHEMA + ".")
    installed = hashlib.sha256(procrastinate_sql("schema.sql").encode()).hexdigest()
    assert installed == revision.SCHEMA_SHA256, "a new procrastinate schema needs a revision"
    # Every routine and type the installed release's queries call exists in the database.
    called = set(re.findall(r"procrastinate_\w+_v\d+", procrastinate_sql("queries.sql")))
    with engine.connect() as connection:
        assert called <= queue_routines(connection)


def test_the_queue_schema_goes_and_comes_back(database_url: str, engine: sa.Engine) -> None:
    config = alembic_config(database_url)
    try:
        command.downgrade(config, "0006")
        with engine.connect() as connection:
            assert queue_routines(connection) == set()
            tables = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'procrastinate%'"
            assert connection.execute(sa.text(tables)).scalar_one() == 0
    finally:
        command.upgrade(config, "head")
    with engine.connect() as connection:
        assert "procrastinate_fetch_job_v2" in queue_routines(connection)
