"""A newcomer's first hour, over HTTP with the doubles, from an empty data directory: register the
App (GitHub failing the first exchange), restart, let `baton doctor` say what is missing, add the
model key to `.env`, and see a labelled issue get its plan."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.settings import Settings, load_settings
from bot.store.db import create_engine
from bot.store.migrate import upgrade
from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, WIDGETS_FILES
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble
from tests.setup_browser import manifest_page, only_form, post_to_github, signed_in_browser
from tests.support import FAST, serve, wait_for
from tests.world import DIAMOND, ISSUE, ISSUE_BODY, World, submit
from webhooks.access import OperatorAccess
from webhooks.app import create_app

BATON = Path(sys.executable).parent / "baton"
CONVERSIONS = "/app-manifests/.+/conversions"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder Baton runs in: `.env` lands here; nothing of the test's environment leaks."""
    folder = tmp_path / "baton"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for name in list(os.environ):
        if name.startswith(("BATON_", "ANTHROPIC_", "OPENAI_")):
            monkeypatch.delenv(name)
    return folder


def environment(database_url: str, home: Path, github: GitHubDouble) -> dict[str, str]:
    """What the operator sets by hand: where the data is and which GitHub (an Enterprise-like
    server on loopback). Everything else comes from `.env`."""
    return {
        "BATON_DATABASE_URL": database_url,
        "BATON_DATA_DIR": str(home / "data"),
        "BATON_GITHUB_URL": github.url,
        "BATON_GITHUB_API_URL": github.api_url,
        "BATON_SETUP_ALLOW_HTTP_GITHUB": "true",
    }


@contextmanager
def baton_with(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, OperatorAccess, Settings]]:
    """Baton started as `baton serve` would be, with `env` and the `.env` of the folder."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    operator = OperatorAccess(setup_mode=not settings.has_app_credentials)
    with serve(create_app(settings, FAST, operator=operator)) as url:
        yield url, operator, settings


def doctor(env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BATON), "doctor"],
        env={"PATH": os.environ["PATH"], **env},
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )


def test_from_an_empty_data_directory_to_a_plan_on_a_labelled_issue(
    home: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with GitHubDouble(tmp_path / "github") as github, ModelDouble() as models:
        env = environment(database_url, home, github)
        engine = create_engine(database_url)
        upgrade(engine)  # `make run` does this before serving

        # Setup mode: GitHub fails the first exchange, the page says so, the retry registers.
        with baton_with(env, monkeypatch) as (url, operator, _):
            with signed_in_browser(url, operator) as browser:
                github.fail_next("POST", CONVERSIONS, 502)
                back = post_to_github(only_form(manifest_page(browser, public_url=url)))
                failed = browser.get(back.headers["location"])
                registered = browser.get(back.headers["location"])
        assert failed.status_code == 502
        assert registered.status_code == 200, registered.text
        assert "GitHub created the App" in registered.text
        assert (home / ".env").exists()

        # Restarted: the App is known, but no model key yet; doctor says which and how.
        before = doctor(env, home)
        assert before.returncode == 1, before.stdout + before.stderr
        assert "ok    GitHub App: App id" in before.stdout
        assert "ok    App on GitHub: GitHub knows the App as" in before.stdout
        assert "FIX   Model key (anthropic): ANTHROPIC_API_KEY is not set" in before.stdout
        assert "Add ANTHROPIC_API_KEY=... to .env" in before.stdout

        with (home / ".env").open("a") as dotenv:
            dotenv.write(f"ANTHROPIC_API_KEY=sk-ant-newcomer\nANTHROPIC_BASE_URL={models.url}\n")
        after = doctor(env, home)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "Everything Baton needs is in place." in after.stdout

        # The App installed on a repository, an issue labelled: the plan is posted.
        github.add_installation(INSTALLATION_ID, "octo-org")
        github.add_repository(REPOSITORY, INSTALLATION_ID, WIDGETS_FILES, repository_id=712345678)
        github.add_issue(REPOSITORY, ISSUE, "Add a dial", ISSUE_BODY, "alice", ["baton"])
        github.set_permission(REPOSITORY, "alice", "write")
        models.add(submit(DIAMOND))
        with baton_with(env, monkeypatch) as (url, _, settings):
            assert settings.anthropic_api_key is not None  # read from .env
            world = World(github, models, url)
            world.label()
            status = wait_for(lambda: "/approve-plan" in world.status() and world.status(), 60)
        engine.dispose()

    assert "T1" in status
    assert "ANTHROPIC_API_KEY" not in os.environ  # the key stayed in the settings
    with create_engine(database_url).connect() as connection:
        states = connection.execute(sa.text("SELECT state FROM runs")).scalars().all()
    assert states == ["awaiting_approval"]
