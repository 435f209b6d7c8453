"""Fixtures: a fresh database on each backend (SQLite file, the machine's PostgreSQL) and apps."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from bot.settings import Settings
from bot.store.db import create_engine
from bot.store.migrate import upgrade
from tests.support import FAST, SECRET, serve
from webhooks.app import create_app

# The GitHub double, as the `github` fixture.
pytest_plugins = [
    "tests.doubles.fixtures",
    "tests.world",
    "tests.jobs_by_hand",
    "tests.sandboxes",
    "tests.serve_process",
    "tests.setup_browser",
    "tests.browser",
    "tests.workers_by_hand",
]

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test session on the machine's PostgreSQL, migrated once."""
    name = f"baton_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.fail(f"the PostgreSQL tests need a server on 127.0.0.1:5432: {error}")
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def _empty_tables(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy (migrating takes about 0.2 s a time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "baton.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name("baton.db-wal").exists()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a new SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "baton.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    _empty_tables(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        data_dir=tmp_path / "data",
        webhook_secret=SECRET,
    )


@pytest.fixture
def baton_url(settings: Settings) -> Iterator[str]:
    """Baton served over real HTTP on loopback, with a quick executor."""
    with serve(create_app(settings, FAST)) as url:
        yield url
