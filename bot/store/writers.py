"""Writing batches of rows with one prepared INSERT: the write path of webhook ingress.

Three ways, one answer (the key column of each row the unique constraint let in):
- any database, through SQLAlchemy, with RETURNING, in one transaction, on a thread;
- PostgreSQL, on an asynchronous psycopg connection of its own in autocommit mode: one round trip
  a batch (the INSERT, what its triggers add and the commit), where the pool's checkout ping,
  BEGIN, INSERT and COMMIT took four;
- SQLite, on a connection of its own in autocommit mode, on a thread: the INSERT, what its
  triggers add, the commit and the disk flush happen in one driver call, which releases the
  interpreter lock once.
  `benchmarks/ingress.py` showed why: every lock hand-back between this thread and the event
  loop could wait out the interpreter's switch interval (5 ms), and the batches' latency, not
  the CPU, bounded throughput.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import Engine

from bot.store.db import libpq_url
from bot.store.prepared import MAX_ROWS_PER_STATEMENT, PreparedInsert


class BatchWriter(Protocol):
    def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        """Insert rows (from `PreparedInsert.values`); the key of each row actually inserted."""
        ...

    def close(self) -> None: ...


class SqlAlchemyBatchWriter:
    """Through the engine's pool, in one transaction; the INSERT must have RETURNING key."""

    def __init__(self, engine: Engine, insert: PreparedInsert) -> None:
        self._engine = engine
        self._insert = insert

    def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        with self._engine.begin() as connection:
            return self._insert.run(connection, rows)

    def close(self) -> None:
        """The engine belongs to the store, which disposes of it."""


class AsyncBatchWriter(Protocol):
    async def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        """`BatchWriter.write`, awaited on the event loop."""
        ...

    async def close(self) -> None: ...


class InThread:
    """A `BatchWriter` on a thread of its own: only the database calls leave the event loop."""

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-ingress")

    async def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._writer.write, rows)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._writer.close)
        self._thread.shutdown(wait=False)


class PsycopgBatchWriter:
    """One autocommit statement per batch, its values as arrays (one prepared statement for any
    batch size), with RETURNING key, on an asynchronous connection of its own: no thread, so no
    hand-off of each batch and its answer between threads. A connection that failed is dropped
    and the next batch opens another."""

    def __init__(self, engine: Engine, insert: PreparedInsert) -> None:
        self._conninfo = libpq_url(engine.url)
        self._insert = insert
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        connection = await self._connect()
        try:
            async with connection.cursor() as cursor:
                sql, parameters = self._insert.array_sql(), self._insert.arrays(rows)
                await cursor.execute(sql, parameters, prepare=True)
                return [found[0] for found in await cursor.fetchall()]
        except Exception:
            await self.close()
            raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            )
        return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


class SqliteBatchWriter:
    """One autocommit statement per chunk of rows, on its own connection to the database file.

    The INSERT has no RETURNING: if it wrote as many rows as it was given, every key is new;
    otherwise the keys are read back among the rowids this statement just assigned, which are
    consecutive up to the last one (SQLite holds the write lock for the whole statement).
    """

    def __init__(self, path: str, insert: PreparedInsert, key_column: str) -> None:
        self._insert = insert
        self._key_column = key_column
        self._key_index = insert.columns.index(key_column)
        # A busy database (a job committing) is waited for inside SQLite, off the interpreter lock.
        self._connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")

    def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        inserted: list[Any] = []
        for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
            inserted.extend(self._write_chunk(rows[start : start + MAX_ROWS_PER_STATEMENT]))
        return inserted

    def _write_chunk(self, rows: Sequence[list[Any]]) -> list[Any]:
        cursor = self._connection.execute(
            self._insert.sql(len(rows)), self._insert.parameters(rows)
        )
        keys = [row[self._key_index] for row in rows]
        if cursor.rowcount == len(rows):
            return keys
        return self._inserted_among(keys, cursor.lastrowid or 0, cursor.rowcount)

    def _inserted_among(self, keys: list[Any], last_rowid: int, count: int) -> list[Any]:
        if count <= 0:
            return []
        # Table and column names come from the table definition, values are bound.
        table, key, marks = self._insert.table_name, self._key_column, ", ".join("?" * len(keys))
        query = f"SELECT {key} FROM {table} WHERE rowid > ? AND rowid <= ? AND {key} IN ({marks})"
        found = self._connection.execute(query, [last_rowid - count, last_rowid, *keys])
        return [row[0] for row in found]

    def close(self) -> None:
        self._connection.close()
