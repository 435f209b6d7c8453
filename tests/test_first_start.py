"""What a person sees when a setting is wrong, the port is busy or something is missing: one
line naming the variable, exit status 2, no traceback; `baton doctor` lists the rest."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.cli import VERSION
from tests.support import free_port, run_baton

UNMIGRATED = "is at migration none, not"


def bad_settings(tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """Each bad setting a newcomer met, with what the one line must say."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a key\n")
    app = {"BATON_GITHUB_APP_ID": "12345"}
    return {
        "database url of an unknown kind": (
            {"BATON_DATABASE_URL": "postgres://baton@127.0.0.1/baton"},
            "BATON_DATABASE_URL: unknown database kind 'postgres'",
        ),
        "database that cannot be reached": (
            {"BATON_DATABASE_URL": f"postgresql+psycopg://baton@127.0.0.1:{free_port()}/baton"},
            "BATON_DATABASE_URL: postgresql+psycopg://baton@127.0.0.1:",
        ),
        "prices that are not JSON": (
            {"BATON_MODEL_PRICES": '{"openai/x": {input: 1}}'},
            "BATON_MODEL_PRICES: not valid JSON",
        ),
        "toolchains that are not JSON": (
            {"BATON_SANDBOX_TOOLCHAINS": "/opt/node"},
            "BATON_SANDBOX_TOOLCHAINS: not valid JSON",
        ),
        "a private key file that cannot be read": (
            app | {"BATON_GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem")},
            "BATON_GITHUB_PRIVATE_KEY_PATH: cannot read",
        ),
        "a private key file holding garbage": (
            app | {"BATON_GITHUB_PRIVATE_KEY_PATH": str(garbage)},
            "BATON_GITHUB_PRIVATE_KEY_PATH",
        ),
        "a database not migrated yet": ({}, f"BATON_DATABASE_URL: sqlite:///{tmp_path}"),
    }


CASES = list(bad_settings(Path("/")))


@pytest.mark.parametrize("case", CASES)
def test_a_bad_setting_stops_serve_with_one_line_naming_it(tmp_path: Path, case: str) -> None:
    settings, expected = bad_settings(tmp_path)[case]
    env = {"BATON_DATA_DIR": str(tmp_path), "BATON_PORT": str(free_port()), **settings}
    if case != "a database not migrated yet":
        run_baton("db", "upgrade", env=env)  # so the one problem is this case's

    result = run_baton("serve", env=env)

    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_garbage_in_the_key_file_is_named_as_such(tmp_path: Path) -> None:
    settings, _ = bad_settings(tmp_path)["a private key file holding garbage"]

    env = {"BATON_DATA_DIR": str(tmp_path), **settings}
    assert run_baton("db", "upgrade", env=env).returncode == 0
    result = run_baton("serve", env=env)

    assert "does not hold a PEM private key" in result.stderr
    assert "Download a new private key" in result.stderr


def test_serve_on_an_unmigrated_database_says_which_command_to_run(tmp_path: Path) -> None:
    result = run_baton("serve", env={"BATON_DATA_DIR": str(tmp_path)})

    assert result.returncode == 2
    assert UNMIGRATED in result.stderr
    assert "Run `baton db upgrade` first" in result.stderr


def test_a_busy_port_stops_serve_before_anything_starts(tmp_path: Path) -> None:
    env = {"BATON_DATA_DIR": str(tmp_path)}
    assert run_baton("db", "upgrade", env=env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_baton("serve", env=env | {"BATON_PORT": str(port)})

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"BATON_PORT: 127.0.0.1:{port} is already in use (another Baton?); stop that program "
        "or choose another port"
    ]


def test_doctor_lists_what_is_missing_with_its_fix(tmp_path: Path) -> None:
    env = {"BATON_DATA_DIR": str(tmp_path), "BATON_ORCHESTRATOR_MODEL": "openai/gpt-5"}

    before = run_baton("doctor", env=env)
    assert run_baton("db", "upgrade", env=env).returncode == 0
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\n")
    after = run_baton("doctor", env=env | {"ANTHROPIC_API_KEY": "sk-ant-test"}, cwd=tmp_path)

    assert before.returncode == 1
    assert "FIX   Database: BATON_DATABASE_URL" in before.stdout
    assert "Run `baton db upgrade` first" in before.stdout
    assert "FIX   Model key (openai): OPENAI_API_KEY is not set" in before.stdout
    assert "FIX   Model key (anthropic): ANTHROPIC_API_KEY is not set" in before.stdout
    assert "ok    Model key (openai): for openai/gpt-5" in after.stdout
    assert "ok    Model key (anthropic)" in after.stdout
    assert "ok    Database" in after.stdout
    assert "Traceback" not in before.stderr + after.stderr


def test_version() -> None:
    result = run_baton("--version", env={})

    assert (result.returncode, result.stdout) == (0, f"baton {VERSION}\n")
