"""The database writer of webhook ingress: a process of its own, fed batches on its stdin.

Why a process and not the event loop's thread or another thread: measured with `wrk`
(`../shared/bench/ingress-wrk.sh`, concurrency 16), the server's one core was the limit, and
- on SQLite, handing each batch to a thread and its answer back cost more than the INSERT: the
  thread must win the interpreter lock from the event loop, busy with the next requests, twice a
  batch. Ingress held 51% of a bare endpoint's requests/s, and 56% with no database call at all
  on that thread; writing on the event loop instead made it wait out every disk flush (62%).
- on PostgreSQL, psycopg turning a batch into arrays and the protocol took a fifth of the event
  loop's time (64%).
Here the event loop only writes a frame to a pipe and reads one back (85% on both).

Run as a script (`python -I writer_process.py`); it imports the standard library, and psycopg
for PostgreSQL, so it starts in milliseconds. Frames are a 4-byte big-endian length and a
pickle. The first frame says what to open (`Target`; a password never shows in the process
list); each next one is a batch, answered `(True, inserted keys)` or `(False, error text)`.
Pickle is safe here: both ends are this program, started by the server on its own interpreter,
and the webhook values it carries are strings inside the frame, never objects. The process ends
when its stdin closes, so it never outlives the server that started it.
"""

from __future__ import annotations

import pickle
import sqlite3
import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO, NamedTuple, Protocol

HEADER = struct.Struct(">I")
READY = "ready"

# SQLite: one (sql, parameters, keys) per chunk of rows. PostgreSQL: (sql, column arrays).
SqliteBatch = list[tuple[str, Sequence[Any], list[Any]]]
PostgresBatch = tuple[str, dict[str, list[Any]]]


class Target(NamedTuple):
    backend: str  # "sqlite" or "postgresql"
    database: str  # SQLite's file, or PostgreSQL's libpq connection string
    table_name: str
    key_column: str


class Writer(Protocol):
    def write(self, batch: Any) -> list[Any]: ...

    def close(self) -> None: ...


class SqliteBatchWriter:
    """One autocommit statement per chunk of rows, on its own connection to the database file.

    The INSERT has no RETURNING: if it wrote as many rows as it was given, every key is new;
    otherwise the keys are read back among the rowids this statement just assigned, which are
    consecutive up to the last one (SQLite holds the write lock for the whole statement).
    """

    def __init__(self, path: str, table_name: str, key_column: str) -> None:
        self._table_name = table_name
        self._key_column = key_column
        # A busy database (a job committing) is waited for here, not in the server.
        self._connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")

    def write(self, batch: SqliteBatch) -> list[Any]:
        inserted: list[Any] = []
        for sql, parameters, keys in batch:
            inserted.extend(self._write_chunk(sql, parameters, keys))
        return inserted

    def _write_chunk(self, sql: str, parameters: Sequence[Any], keys: list[Any]) -> list[Any]:
        cursor = self._connection.execute(sql, parameters)
        if cursor.rowcount == len(keys):
            return keys
        return self._inserted_among(keys, cursor.lastrowid or 0, cursor.rowcount)

    def _inserted_among(self, keys: list[Any], last_rowid: int, count: int) -> list[Any]:
        if count <= 0:
            return []
        # Table and column names come from the table definition, values are bound.
        table, key, marks = self._table_name, self._key_column, ", ".join("?" * len(keys))
        query = f"SELECT {key} FROM {table} WHERE rowid > ? AND rowid <= ? AND {key} IN ({marks})"
        found = self._connection.execute(query, [last_rowid - count, last_rowid, *keys])
        return [row[0] for row in found]

    def close(self) -> None:
        self._connection.close()


class PostgresBatchWriter:
    """One autocommit statement per batch (its values as arrays, so one prepared statement
    serves any batch size), with RETURNING key. A connection that failed is dropped and the next
    batch opens another."""

    def __init__(self, conninfo: str) -> None:
        import psycopg  # only here: SQLite's writer needs nothing beyond the standard library

        self._psycopg = psycopg
        self._conninfo = conninfo
        self._connection: Any = None

    def write(self, batch: PostgresBatch) -> list[Any]:
        sql, arrays = batch
        if self._connection is None or self._connection.closed:
            self._connection = self._psycopg.connect(self._conninfo, autocommit=True)
        try:
            with self._connection.cursor() as cursor:
                cursor.execute(sql, arrays, prepare=True)
                return [found[0] for found in cursor.fetchall()]
        except self._psycopg.OperationalError:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def read_frame(stream: BinaryIO) -> Any:
    """The next frame's value; EOFError at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def open_writer(target: Target) -> Writer:
    if target.backend == "sqlite":
        return SqliteBatchWriter(target.database, target.table_name, target.key_column)
    if target.backend == "postgresql":
        return PostgresBatchWriter(target.database)
    raise ValueError(f"no writer for {target.backend}")


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    writer = open_writer(Target(*read_frame(requests)))
    try:
        answers.write(frame(READY))
        answers.flush()
        while True:
            batch = read_frame(requests)
            try:
                answer: tuple[bool, Any] = (True, writer.write(batch))
            except Exception as error:  # the database's refusal goes back as the batch's answer
                answer = (False, f"{type(error).__name__}: {error}")
            answers.write(frame(answer))
            answers.flush()
    except EOFError:
        pass
    finally:
        writer.close()


def main() -> int:
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except KeyboardInterrupt:  # the server's terminal sent ^C to the whole group
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
