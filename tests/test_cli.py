"""The `baton` command: database upgrade, and what it says about bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from bot.store.db import create_engine
from bot.store.migrate import is_current

BATON = Path(sys.executable).parent / "baton"


def run_baton(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], **env}
    return subprocess.run(
        [str(BATON), *args], env=full_env, capture_output=True, text=True, check=False
    )


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


def test_serve_refuses_an_executor_that_is_not_available_yet(tmp_path: Path) -> None:
    result = run_baton(
        "serve", env={"BATON_DATA_DIR": str(tmp_path), "BATON_EXECUTOR": "procrastinate"}
    )

    assert result.returncode == 2
    assert "BATON_EXECUTOR='procrastinate': only 'local' is available so far" in result.stderr
