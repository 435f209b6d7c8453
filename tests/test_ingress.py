"""Recording deliveries: answers decided by the unique constraint, jobs added by the database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.events import decide
from bot.ingress import Answer, NewDelivery, answers_for, delivery_row, delivery_writer
from bot.store.db import Store
from bot.store.prepared import MAX_ROWS_PER_STATEMENT
from bot.store.types import utcnow
from bot.store.writers import ProcessWriter, WriterFailed
from tests.support import payload, wait_for

LABELED = decide("issues", json.dumps(payload("issues.labeled")).encode())
PING = decide("ping", json.dumps(payload("ping")).encode())


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.close()


def write(store: Store, deliveries: list[NewDelivery]) -> list[Answer]:
    return asyncio.run(_write(store, deliveries))


async def _write(store: Store, deliveries: list[NewDelivery]) -> list[Answer]:
    insert, writer = delivery_writer(store)
    try:
        rows = [insert.values(delivery_row(delivery, utcnow())) for delivery in deliveries]
        return answers_for(deliveries, await writer.write(rows))
    finally:
        await writer.close()


def labeled(delivery_id: str) -> NewDelivery:
    return NewDelivery(delivery_id=delivery_id, event="issues", decision=LABELED)


def test_a_batch_mixing_new_repeated_and_ignored_deliveries(store: Store) -> None:
    assert write(store, [labeled("seen")]) == [Answer.queued]

    answers = write(
        store,
        [
            labeled("a"),
            labeled("seen"),
            NewDelivery(delivery_id="p", event="ping", decision=PING),
            labeled("a"),
            labeled("b"),
        ],
    )

    assert answers == [
        Answer.queued,
        Answer.duplicate,
        Answer.ignored,
        Answer.duplicate,
        Answer.queued,
    ]
    with store.engine.connect() as connection:
        deliveries = connection.execute(sa.text("SELECT delivery_id FROM deliveries")).scalars()
        jobs = connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()
    assert sorted(deliveries) == ["a", "b", "p", "seen"]
    assert jobs == 3


def test_the_database_adds_each_queued_delivery_s_job(store: Store) -> None:
    write(store, [labeled("d-1"), NewDelivery(delivery_id="p", event="ping", decision=PING)])

    with store.engine.connect() as connection:
        delivery = connection.execute(
            sa.text("SELECT id, received_at FROM deliveries WHERE delivery_id = 'd-1'")
        ).one()
        job = connection.execute(sa.text("SELECT * FROM jobs")).mappings().one()
    assert job["name"] == "start_run"
    assert job["delivery_id"] == delivery.id
    args = job["args"]  # text on SQLite, decoded JSON on PostgreSQL
    assert (json.loads(args) if isinstance(args, str) else args) == {"delivery_id": delivery.id}
    assert (job["state"], job["attempts"], job["max_attempts"]) == ("queued", 0, 5)
    assert job["run_after"] == delivery.received_at


def test_batches_larger_than_one_statement_are_written_whole(store: Store) -> None:
    count = MAX_ROWS_PER_STATEMENT * 2 + 3
    batch = [labeled(f"d-{n}") for n in range(count)] + [labeled("d-0")]

    answers = write(store, batch)

    assert answers == [Answer.queued] * count + [Answer.duplicate]
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == count


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_value_longer_than_its_column_fails_the_batch_and_writes_nothing(store: Store) -> None:
    # PostgreSQL only: SQLite does not enforce column lengths.
    long_name = labeled("long")._replace(event="e" * 65)

    with pytest.raises(WriterFailed, match="StringDataRightTruncation: value too long"):
        write(store, [labeled("fine"), long_name])

    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one() == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_writer_whose_connection_died_fails_that_batch_and_reconnects(store: Store) -> None:
    asyncio.run(_connection_dies_between_batches(store))


async def _connection_dies_between_batches(store: Store) -> None:
    insert, writer = delivery_writer(store)
    rows = [insert.values(delivery_row(labeled(key), utcnow())) for key in ("x", "y")]
    try:
        assert await writer.write(rows[:1]) == ["x"]
        with store.engine.connect() as admin:
            # The writer's own backend, ended from outside, as a database restart would.
            admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state = 'idle' AND query LIKE 'INSERT INTO deliveries%'"
                )
            )
        with pytest.raises(WriterFailed, match="terminating connection"):
            await writer.write(rows[1:])
        assert await writer.write(rows[1:]) == ["y"]
    finally:
        await writer.close()


def test_a_writer_process_that_died_is_replaced_and_a_batch_it_lost_fails(
    store: Store,
) -> None:
    asyncio.run(_writer_process_dies(store))


async def _writer_process_dies(store: Store) -> None:
    insert, writer = delivery_writer(store)
    assert isinstance(writer, ProcessWriter)
    rows = [insert.values(delivery_row(labeled(key), utcnow())) for key in ("x", "y", "z")]
    try:
        assert await writer.write(rows[:1]) == ["x"]
        # Dead between two batches: the next batch starts another process.
        first = writer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await asyncio.to_thread(wait_for, lambda: writer.pid is None)
        assert await writer.write(rows[1:2]) == ["y"]
        # Dead with a batch sent and not read: that batch fails, the next one is written.
        second = writer.pid
        assert second not in (None, first)
        os.kill(second, signal.SIGSTOP)
        await asyncio.to_thread(wait_for, lambda: _state(second) == "T")
        lost = asyncio.create_task(writer.write(rows[2:]))
        os.kill(second, signal.SIGKILL)
        with pytest.raises(WriterFailed, match="went away"):
            await lost
        assert await _count(store, "z") == 0
        assert await writer.write(rows[2:]) == ["z"]
    finally:
        await writer.close()
    assert writer.pid is None
    with store.engine.connect() as connection:
        keys = connection.execute(sa.text("SELECT delivery_id FROM deliveries")).scalars()
        assert sorted(keys) == ["x", "y", "z"]


async def _count(store: Store, key: str) -> int:
    query = sa.text("SELECT count(*) FROM deliveries WHERE delivery_id = :key")
    with store.engine.connect() as connection:
        return int(connection.execute(query, {"key": key}).scalar_one())


def _state(pid: int) -> str:
    """The process's state letter (R, S, T, Z...), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def test_the_writer_process_shows_no_password_and_ends_with_its_server(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    # A server that records one delivery, prints its writer's id, then waits to be killed.
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, database_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        writer_pid = int(server.stdout.readline())
        command_line = Path(f"/proc/{writer_pid}/cmdline").read_bytes().split(b"\0")
        assert command_line[1:] == [b"-I", writer_process_file().encode(), b""]
        server.kill()  # no chance to close its writer
        server.wait()
        wait_for(lambda: _state(writer_pid) in ("", "Z"))
    finally:
        server.kill()
        server.wait()
    with store.engine.connect() as connection:
        keys = connection.execute(sa.text("SELECT delivery_id FROM deliveries")).scalars()
        assert list(keys) == ["from-server"]


def writer_process_file() -> str:
    from bot.store import writer_process

    return writer_process.__file__


_SERVER = """
import asyncio, sys
from bot.ingress import delivery_row, delivery_writer
from bot.store.db import Store
from bot.store.types import utcnow
from tests.test_ingress import labeled

async def main():
    insert, writer = delivery_writer(Store(sys.argv[1]))
    await writer.write([insert.values(delivery_row(labeled("from-server"), utcnow()))])
    print(writer.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""
