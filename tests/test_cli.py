"""The `baton` command: database upgrade, and what it says about bad settings."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bot.store.db import create_engine
from bot.store.migrate import is_current
from tests.support import BATON, free_port, run_baton


def test_db_upgrade_creates_the_default_sqlite_database_and_is_repeatable(tmp_path: Path) -> None:
    env = {"BATON_DATA_DIR": str(tmp_path / "data")}

    first = run_baton("db", "upgrade", env=env)
    second = run_baton("db", "upgrade", env=env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'baton.db'}")
    assert is_current(engine)
    engine.dispose()


def test_db_upgrade_on_postgresql(postgres_database: str) -> None:
    result = run_baton("db", "upgrade", env={"BATON_DATABASE_URL": postgres_database})

    assert result.returncode == 0, result.stderr
    engine = create_engine(postgres_database)
    assert is_current(engine)
    assert "runs" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_unknown_command_is_refused(tmp_path: Path) -> None:
    result = run_baton("launch", env={"BATON_DATA_DIR": str(tmp_path)})

    assert result.returncode == 2
    assert "No such command" in result.stderr


NEEDS_POSTGRESQL = "BATON_EXECUTOR='procrastinate' needs PostgreSQL"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_queue_of_many_machines_is_refused_on_sqlite(tmp_path: Path, command: str) -> None:
    env = {"BATON_DATA_DIR": str(tmp_path), "BATON_EXECUTOR": "procrastinate"}
    result = run_baton(command, env=env)

    assert result.returncode == 2
    assert NEEDS_POSTGRESQL in result.stderr
    assert not (tmp_path / "baton.db").exists()  # refused before anything was made


def test_a_worker_without_the_shared_queue_is_refused(tmp_path: Path) -> None:
    result = run_baton("worker", env={"BATON_DATA_DIR": str(tmp_path)})

    assert result.returncode == 2
    assert "baton worker runs jobs for many machines: set BATON_EXECUTOR=procrastinate" in (
        result.stderr
    )


@contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`baton serve` running until the block ends; yields it and its stderr lines until the server
    said it is listening."""
    full_env = {"PATH": os.environ["PATH"], **env}
    process = subprocess.Popen(
        [str(BATON), "serve"], env=full_env, cwd=cwd, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if "open this link" in line:
                break
        yield process, lines
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_prints_the_operators_sign_in_link_that_opens_setup_mode(tmp_path: Path) -> None:
    port = free_port()
    env = {"BATON_DATA_DIR": str(tmp_path / "data"), "BATON_PORT": str(port)}
    assert run_baton("db", "upgrade", env=env).returncode == 0

    with serving(env, tmp_path) as (_, lines):
        plain = [line for line in lines if not line.startswith("{") and "?code=" in line]
        logged = [json.loads(line) for line in lines if line.startswith("{")]
        assert plain, "\n".join(lines)
        link = plain[0].split()[-1]
        with httpx.Client(timeout=30) as browser:
            without_code = browser.get(f"http://127.0.0.1:{port}/")
            signed_in = browser.get(link)
            setup_page = browser.get(f"http://127.0.0.1:{port}/")

    assert link.startswith(f"http://127.0.0.1:{port}/?code=")
    assert any(record.get("link") == link for record in logged)
    assert without_code.status_code == 403
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")
    assert setup_page.status_code == 200
    assert "Register Baton on GitHub" in setup_page.text
