"""A real `baton serve` killed with SIGKILL mid-stream loses no answered delivery, and after a
restart on the same database every stored delivery's job has run, each effect exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.support import SECRET, count_rows, delivery_headers, free_port, payload, wait_for

DELIVERIES = 120
# Each delivery's own job; each also queues the repository's trigger label (GitHub is not here).
SYNC = "name = 'sync_installation_repositories'"


@pytest.fixture
def server_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BATON_DATABASE_URL": database_url,
        "BATON_DATA_DIR": str(tmp_path / "data"),
        "BATON_WEBHOOK_SECRET": SECRET,
        "BATON_PORT": str(free_port()),
        "BATON_JOB_LEASE_SECONDS": "1",
        "BATON_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def start_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"serve-{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"], env=server_env, stdout=log, stderr=log
        )
        processes.append(process)
        url = f"http://127.0.0.1:{server_env['BATON_PORT']}/healthz"
        wait_for(lambda: _answers(url) or process.poll() is not None, timeout=30)
        assert process.poll() is None, (tmp_path / f"serve-{len(processes) - 1}.log").read_text()
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def repository_added(number: int) -> bytes:
    """An `installation_repositories.added` delivery whose job records one repository, `r{n}`."""
    body = payload("installation_repositories.added")
    body["repositories_added"] = [
        {"id": 1_000_000 + number, "name": f"r{number}", "full_name": f"octo-org/r{number}"}
    ]
    return json.dumps(body).encode()


async def send_until_killed(
    url: str, process: subprocess.Popen[bytes], deliveries: int = DELIVERIES
) -> list[int]:
    """Send deliveries 16 at a time; SIGKILL the server halfway. Returns those answered queued."""
    queued: list[int] = []
    limit = asyncio.Semaphore(16)

    async def send(client: httpx.AsyncClient, number: int) -> None:
        body = repository_added(number)
        headers = delivery_headers("installation_repositories", f"d-{number}", body)
        async with limit:
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                return  # in flight when the server died: GitHub would see a failed delivery
        if response.status_code == 202:
            queued.append(number)
            if len(queued) == deliveries // 2:
                process.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(*(send(client, n) for n in range(1, deliveries + 1)))
    return queued


async def test_sigkill_loses_no_answered_delivery_and_restart_finishes_every_job_once(
    start_server: object, server_env: dict[str, str], engine: sa.Engine
) -> None:
    process = start_server()  # type: ignore[operator]
    url = f"http://127.0.0.1:{server_env['BATON_PORT']}/api/github/webhooks"

    queued = await send_until_killed(url, process)
    process.wait(timeout=10)

    stored = stored_deliveries(engine)
    assert set(queued) <= stored, "a delivery answered 202 was not stored"
    unfinished = count_rows(engine, "jobs", "state IN ('queued', 'running')")
    assert unfinished > 0, "every job finished before the kill; the test proved nothing"

    start_server()  # type: ignore[operator]
    succeeded = f"{SYNC} AND state = 'succeeded'"
    wait_for(lambda: count_rows(engine, "jobs", succeeded) == len(stored), timeout=60)

    assert count_rows(engine, "jobs", SYNC) == len(stored)
    assert recorded_repositories(engine) == sorted(stored)


def recorded_repositories(engine: sa.Engine) -> list[int]:
    """The numbers of the repositories the jobs recorded, `r{n}` each."""
    with engine.connect() as connection:
        query = sa.text("SELECT full_name FROM installation_repositories")
        names = connection.execute(query).scalars()
        return sorted(int(name.removeprefix("octo-org/r")) for name in names)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        command = [sys.executable, "-m", "bot.cli", "worker"]
        return subprocess.Popen(command, env=env, stdout=output, stderr=output)


def stored_deliveries(engine: sa.Engine) -> set[int]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT delivery_id FROM deliveries"))
        return {int(row.delivery_id.removeprefix("d-")) for row in rows}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_with_workers_a_killed_server_loses_no_answered_delivery_and_each_job_runs_once(
    start_server: object, server_env: dict[str, str], engine: sa.Engine, tmp_path: Path
) -> None:
    """Many machines: `baton serve` only answers and relays; a `baton worker` runs the jobs."""
    # No worker dies here: a lease long enough for a loaded machine, so a claim is never lost.
    server_env |= {"BATON_EXECUTOR": "procrastinate", "BATON_JOB_LEASE_SECONDS": "30"}
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE procrastinate_jobs, procrastinate_workers CASCADE"))
    process = start_server()  # type: ignore[operator]
    url = f"http://127.0.0.1:{server_env['BATON_PORT']}/api/github/webhooks"

    queued = await send_until_killed(url, process, deliveries=200)
    process.wait(timeout=10)
    stored = stored_deliveries(engine)
    assert set(queued) <= stored, "a delivery answered 202 was not stored"

    worker = start_worker(server_env, tmp_path / "worker.log")
    try:
        start_server()  # type: ignore[operator]
        succeeded = f"{SYNC} AND state = 'succeeded'"
        wait_for(lambda: count_rows(engine, "jobs", succeeded) == len(stored), timeout=90)
    finally:
        worker.kill()
        worker.wait()

    assert count_rows(engine, "jobs", SYNC) == len(stored)
    # Each ran once: none was claimed twice, none failed (two new installations' rows at once).
    assert count_rows(engine, "jobs", f"{SYNC} AND attempts <> 1") == 0
    assert recorded_repositories(engine) == sorted(stored)


def test_no_child_of_serve_holds_its_listening_socket(
    start_server: Any, server_env: dict[str, str]
) -> None:
    # A child holding it (the delivery writer, git, a sandboxed command) could accept Baton's
    # connections, and kept the port busy after Baton died.
    server = start_server()
    port = int(server_env["BATON_PORT"])
    body = json.dumps(payload("ping")).encode()
    answer = httpx.post(
        f"http://127.0.0.1:{port}/api/github/webhooks",
        content=body,
        headers=delivery_headers("ping", "first", body),
    )
    assert answer.status_code == 202  # recorded: the writer process runs
    children = _children(server.pid)
    assert children, "serve started no child to write deliveries"
    listener = f"socket:[{_listening_inode(port)}]"
    for child in children:
        held = {os.readlink(fd) for fd in Path(f"/proc/{child}/fd").iterdir()}
        assert listener not in held, f"child {child} holds the listening socket"

    server.kill()
    server.wait()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # free at once, whatever its children do meanwhile


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:port, from the kernel's table."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if local == f"0100007F:{port:04X}" and state == "0A":
            return inode
    raise AssertionError(f"nothing listens on port {port}")
