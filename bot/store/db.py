"""The engine and sessions. SQLite and PostgreSQL run the same code; only tuning differs."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlmodel import Session, SQLModel

T = TypeVar("T")


def create_engine(url: str) -> Engine:
    """An engine for `url` (an SQLAlchemy URL); for SQLite the file's folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # One shared connection: SQLite takes one writer at a time anyway, and queueing on the pool
    # wakes waiters at once, where SQLite's busy handler sleeps and would spoil tail latency.
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
    )
    sa.event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before Baton answers GitHub, even if the machine loses power.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """The database: sessions for sync code, and `run` to do a unit of work off the event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        # Database work is blocking; a small pool keeps it off the event loop.
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="baton-db")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a database thread inside one transaction."""

        def unit() -> T:
            with self.session() as session:
                return work(session)

        return await self._in_thread(unit)

    async def run_connection(self, work: Callable[[sa.Connection], T]) -> T:
        """Run `work(connection)` (SQL Core, no ORM) in a database thread inside one transaction."""

        def unit() -> T:
            with self.engine.begin() as connection:
                return work(connection)

        return await self._in_thread(unit)

    async def _in_thread(self, unit: Callable[[], T]) -> T:
        # Copy the context so log lines written by the unit keep the delivery and run ids.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._threads, context.run, unit)

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self.engine.dispose()


def insert_ignoring_conflicts(
    connection: sa.Connection | Session,
    table: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    *,
    conflict_column: str | None = None,
    returning: tuple[str, str] = ("id", "id"),
) -> dict[Any, Any]:
    """INSERT rows, skipping any that break a unique constraint; maps key -> value of inserted.

    `returning` names the (key, value) columns read back from the rows actually inserted, so a
    caller learns what was new from the constraint itself rather than from a prior read.
    """
    if not rows:
        return {}
    sa_table: sa.Table = table.__table__  # type: ignore[attr-defined]
    targets = [conflict_column] if conflict_column else None
    key, value = returning
    statement = (
        conflict_aware_insert(_bind(connection).dialect, sa_table)
        .on_conflict_do_nothing(index_elements=targets)
        .returning(sa_table.c[key], sa_table.c[value])
    )
    # Rows go as parameters, not into the statement, so its compiled form is cached and reused;
    # SQLAlchemy still sends them as one multi-row INSERT.
    result = connection.execute(statement, list(rows))
    return {row[0]: row[1] for row in result}


def _bind(connection: sa.Connection | Session) -> sa.Connection | sa.Engine:
    return connection.get_bind() if isinstance(connection, Session) else connection


def conflict_aware_insert(dialect: Dialect, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING (SQLite and PostgreSQL only)."""
    if dialect.name == "sqlite":
        return sqlite.insert(table)
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    raise RuntimeError(f"unsupported database {dialect.name!r}: Baton runs on SQLite or PostgreSQL")


def libpq_url(database_url: str | URL) -> str:
    """A PostgreSQL URL as the libpq connection string psycopg takes (the driver's name off)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"{url.get_backend_name()} is not PostgreSQL")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
