"""Writing batches of rows with one prepared INSERT: the write path of webhook ingress.

Two ways, one answer (the key column of each row the unique constraint let in):
- SQLite's file and PostgreSQL (psycopg): in a process of its own (`writer_process` says why),
  on a connection in autocommit mode, one statement a batch: the INSERT, what its triggers add,
  the commit and the disk flush in one driver call. On PostgreSQL that is one round trip, where
  the pool's checkout ping, BEGIN, INSERT and COMMIT took four;
- any other database, through SQLAlchemy, with RETURNING, in one transaction, on a thread.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from bot.store import writer_process
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


class WriterFailed(Exception):
    """The writer process refused a batch (the database's error) or went away."""


class ProcessWriter:
    """Batches written in a child process (`writer_process`), one at a time.

    The process starts with the first batch. When it cannot be reached, or a batch is abandoned
    half way (its caller cancelled), it is stopped and the next batch starts another: a batch
    either got its answer or is reported failed, never mixed up with the next one's.
    """

    def __init__(self, target: writer_process.Target, batch_of: BatchOf) -> None:
        self._target = target
        self._batch_of = batch_of
        self._process: asyncio.subprocess.Process | None = None
        self._one_at_a_time = asyncio.Lock()

    @classmethod
    def for_store(cls, engine: Engine, insert: PreparedInsert, key_column: str) -> ProcessWriter:
        """The writer of `insert` into the engine's database: SQLite's file or PostgreSQL."""
        url = engine.url
        if url.get_backend_name() == "postgresql":
            target = writer_process.Target(
                "postgresql", libpq_url(url), insert.table_name, key_column
            )
            return cls(target, lambda rows: (insert.array_sql(), insert.arrays(rows)))
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            raise ValueError(f"no writer process for {url.render_as_string()}")
        key_index = insert.columns.index(key_column)
        target = writer_process.Target("sqlite", url.database, insert.table_name, key_column)
        return cls(target, lambda rows: sqlite_chunks(insert, key_index, rows))

    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def write(self, rows: Sequence[list[Any]]) -> list[Any]:
        async with self._one_at_a_time:
            process = await self._running()
            try:
                succeeded, value = await _exchange(process, self._batch_of(rows))
            except BaseException:
                await self._stop(process)
                raise
        if not succeeded:
            raise WriterFailed(value)
        return list(value)

    async def _running(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._process.returncode is None:
            return self._process
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # the standard library and the installed packages, nothing from the environment
            writer_process.__file__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            ready = await _exchange(process, tuple(self._target))
            if ready != writer_process.READY:
                raise WriterFailed(f"the writer process did not start: {ready!r}")
        except BaseException:
            await self._stop(process)
            raise
        self._process = process
        return process

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        if self._process is process:
            self._process = None
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def close(self) -> None:
        """Let the process finish its batch and end (its stdin closes)."""
        async with self._one_at_a_time:
            process, self._process = self._process, None
            if process is None:
                return
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


BatchOf = Callable[[Sequence[list[Any]]], Any]


def sqlite_chunks(
    insert: PreparedInsert, key_index: int, rows: Sequence[list[Any]]
) -> writer_process.SqliteBatch:
    """SQLite's batch: one statement per `MAX_ROWS_PER_STATEMENT` rows, with their keys."""
    chunks: writer_process.SqliteBatch = []
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
        keys = [row[key_index] for row in chunk]
        # SQLAlchemy hands SQLite's blobs over as memoryviews, which do not pickle.
        parameters = [
            bytes(v) if isinstance(v, memoryview) else v for v in insert.parameters(chunk)
        ]
        chunks.append((insert.sql(len(chunk)), parameters, keys))
    return chunks


async def _exchange(process: asyncio.subprocess.Process, request: Any) -> Any:
    """Send one frame to the writer process and read its answer; `WriterFailed` when it went
    away."""
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        process.stdin.write(writer_process.frame(request))
        await process.stdin.drain()
        header = await process.stdout.readexactly(writer_process.HEADER.size)
        (size,) = writer_process.HEADER.unpack(header)
        return pickle.loads(await process.stdout.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError) as error:
        raise WriterFailed("the writer process went away") from error
