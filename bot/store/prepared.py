"""An INSERT compiled once and run on the driver's cursor, for the webhook hot path.

Why not plain SQLAlchemy execution: `benchmarks/ingress.py` found its per-row overhead (about
40 µs a row, in the thread that also holds the interpreter lock the server needs) the largest
cost of recording a delivery. The statement text and every value's conversion still come from
SQLAlchemy and the table definition, so nothing about the table is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect

from bot.store.db import conflict_aware_insert

MAX_ROWS_PER_STATEMENT = 64


class PreparedInsert:
    """Multi-row INSERT of `columns` that skips rows breaking the unique `conflict_column` and,
    with `returning`, returns that column of each row actually inserted."""

    def __init__(
        self,
        table: sa.Table,
        columns: Sequence[str],
        dialect: Dialect,
        *,
        conflict_column: str,
        returning: str | None = None,
    ) -> None:
        self._table = table
        self.table_name = table.name
        self.columns = tuple(columns)
        self._dialect = dialect
        self._conflict_column = conflict_column
        self._returning = returning
        self._convert: list[Callable[[Any], Any] | None] = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
        ]
        self.sql = lru_cache(maxsize=MAX_ROWS_PER_STATEMENT)(self._compile)
        self._array_sql: str | None = None

    def values(self, row: dict[str, Any]) -> list[Any]:
        """The row's values, converted for the driver, in column order."""
        return [
            convert(row[name]) if convert is not None else row[name]
            for name, convert in zip(self.columns, self._convert, strict=True)
        ]

    def run(self, connection: Connection, rows: Sequence[list[Any]]) -> list[Any]:
        """Insert rows (from `values`) in the connection's transaction, one statement per
        `MAX_ROWS_PER_STATEMENT`; returns the `returning` value of each row inserted."""
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        inserted: list[Any] = []
        try:
            for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
                chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
                cursor.execute(self.sql(len(chunk)), self.parameters(chunk))
                inserted.extend(found[0] for found in cursor.fetchall())
        finally:
            cursor.close()
        return inserted

    def parameters(self, rows: Sequence[list[Any]]) -> Any:
        """The driver's parameters for `sql(len(rows))`."""
        flat = [value for row in rows for value in row]
        if self._dialect.paramstyle == "qmark":
            return flat
        return {f"p{index}": value for index, value in enumerate(flat)}

    def array_sql(self) -> str:
        """PostgreSQL only: the INSERT taking each column's values as one array (`arrays`), so
        one statement text, which the server prepares once, serves a batch of any size."""
        if self._array_sql is None:
            self._array_sql = self._compile_arrays()
        return self._array_sql

    def arrays(self, rows: Sequence[list[Any]]) -> dict[str, list[Any]]:
        """The parameters of `array_sql` for rows (from `values`)."""
        return {f"c{n}": [row[n] for row in rows] for n in range(len(self.columns))}

    def _compile_arrays(self) -> str:
        if self._dialect.name != "postgresql":
            raise RuntimeError("array parameters are PostgreSQL's")
        # Text arrays, not varchar(n): a value too long then fails as in VALUES, not cut short.
        arrays = [
            sa.cast(sa.bindparam(f"c{n}"), postgresql.ARRAY(_unbounded(self._table.c[name].type)))
            for n, name in enumerate(self.columns)
        ]
        source = sa.func.unnest(*arrays).table_valued(*self.columns).render_derived()
        rows = sa.select(*(source.c[name] for name in self.columns))
        statement: Any = (
            postgresql.insert(self._table)
            .from_select(list(self.columns), rows)
            .on_conflict_do_nothing(index_elements=[self._conflict_column])
        )
        if self._returning is not None:
            statement = statement.returning(self._table.c[self._returning])
        return str(statement.compile(dialect=self._dialect).string)

    def _compile(self, count: int) -> str:
        """The statement text for `count` rows."""
        width = len(self.columns)
        rows: list[dict[str, Any]] = [
            {column: sa.bindparam(f"p{row * width + n}") for n, column in enumerate(self.columns)}
            for row in range(count)
        ]
        statement: Any = (
            conflict_aware_insert(self._dialect, self._table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[self._conflict_column])
        )
        if self._returning is not None:
            statement = statement.returning(self._table.c[self._returning])
        compiled = statement.compile(dialect=self._dialect)
        if self._dialect.paramstyle == "qmark":
            # Positional: the compiled order must be the row-by-row order values are sent in.
            expected = [f"p{index}" for index in range(count * width)]
            if list(compiled.positiontup or []) != expected:
                raise RuntimeError("SQLAlchemy compiled the multi-row INSERT in another order")
        return str(compiled.string)


def _unbounded(column_type: Any) -> Any:
    # SQLModel's strings are a TypeDecorator over String.
    impl = column_type.impl if isinstance(column_type, sa.TypeDecorator) else column_type
    return sa.Text() if isinstance(impl, sa.String) else column_type
