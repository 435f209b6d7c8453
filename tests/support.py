"""Helpers the tests share: signing deliveries, serving an app on loopback, counting rows,
repositories and worktrees made by hand, calling a model's tools, running the `baton` command,
and a loopback listener that records who connects."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from starlette.types import ASGIApp

from bot.executor.local import ExecutorTuning
from bot.llm.agent import Tool, ToolError

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "test-webhook-secret"
# Jobs picked up and retried quickly, so tests wait little.
FAST = ExecutorTuning(concurrency=4, lease_seconds=2.0, poll_seconds=0.1, backoff_base_seconds=0.05)
# The test repository's own tests, in the sandbox. Plugins are not loaded: the widgets need none,
# and loading the ones Baton's own tests installed beside pytest takes a second a run.
REPOSITORY_TESTS = (
    f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {sys.executable} -m pytest -q -p no:cacheprovider"
)


def payload(name: str) -> dict[str, Any]:
    """A realistic payload from tests/payloads, e.g. payload('issues.labeled')."""
    loaded: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return loaded


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(
    event: str, delivery_id: str, body: bytes, secret: str = SECRET
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": sign(body, secret),
        "Content-Type": "application/json",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a loopback port in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def count_rows(engine: sa.Engine, table: str, where: str = "") -> int:
    query = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


def wait_for(condition: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def git(*args: str, cwd: Path) -> str:
    """A real git, run by hand as a person would, with no user configuration; output stripped."""
    environment = {
        "PATH": os.environ["PATH"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Maintainer",
        "GIT_AUTHOR_EMAIL": "maintainer@example.com",
        "GIT_COMMITTER_NAME": "Maintainer",
        "GIT_COMMITTER_EMAIL": "maintainer@example.com",
    }
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env=environment, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def write(base: Path, files: dict[str, str | bytes]) -> None:
    """Write `files` (text or bytes, by path) under `base`, making their folders."""
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def committed_repository(origin: Path, files: dict[str, str | bytes]) -> Path:
    """A repository at `origin` with `files`, and whatever is already there, in one commit."""
    origin.mkdir(parents=True, exist_ok=True)
    write(origin, files)
    git("init", "-q", "-b", "main", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "files", cwd=origin)
    return origin


def worktree(origin: Path, checkout: Path) -> Path:
    """A detached worktree of `origin`'s head at `checkout`: its `.git` is a file."""
    git("worktree", "add", "-q", "--detach", str(checkout), "HEAD", cwd=origin)
    assert (checkout / ".git").is_file()
    return checkout


async def call(tools: list[Tool], name: str, **arguments: Any) -> dict[str, Any]:
    """Run the tool `name` of `tools` as a model would; its answer, parsed."""
    tool = next(tool for tool in tools if tool.spec.name == name)
    answer: dict[str, Any] = json.loads(await tool.run(arguments))
    return answer


async def refused(tools: list[Tool], name: str, **arguments: Any) -> str:
    """Run the tool `name`, which must refuse; what it said."""
    with pytest.raises(ToolError) as error:
        await call(tools, name, **arguments)
    return str(error.value)


BATON = Path(sys.executable).parent / "baton"


def run_baton(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`baton` with only `env` and PATH, in `cwd` (default: the data directory, so no `.env`
    of the checkout is read)."""
    full_env = {"PATH": os.environ["PATH"], **env}
    where = cwd or Path(env.get("BATON_DATA_DIR", "/"))
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(BATON), *args], env=full_env, cwd=where, capture_output=True, text=True, check=False
    )


class Listener:
    """A TCP server on loopback that records every connection it accepts."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.accepted: list[Any] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, peer = self.socket.accept()
            except OSError:
                return  # closed
            self.accepted.append(peer)
            connection.close()

    def close(self) -> None:
        self.socket.close()


def hostile_setup(port: int) -> str:
    """A setup script that tries to reach Baton's host and says how it went."""
    return (
        "echo setup ran > setup.log\n"
        f"if (echo hello > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; "
        "then echo CONNECTED >> setup.log; else echo REFUSED >> setup.log; fi\n"
    )


def is_the_queues(name: str | None) -> bool:
    """procrastinate's tables (PostgreSQL): its schema, applied by revision 0007, not models."""
    return name is not None and name.startswith("procrastinate")


def model_drift(connection: sa.Connection) -> list[Any]:
    """How the database differs from the models: columns, types, indexes (not the queues')."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    opts = {"compare_type": True, "include_name": lambda name, *_: not is_the_queues(name)}
    context = MigrationContext.configure(connection, opts=opts)
    return list(compare_metadata(context, SQLModel.metadata))
