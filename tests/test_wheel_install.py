"""The wheel as a stranger installs it: built from the files the Dockerfile copies, installed in
a fresh virtualenv outside the checkout, and run from a folder Baton may not write to, as a user
who is not root (as the container runs it). Setup mode must then read `app.yml` from the
installed package and save the new App's credentials to `$BATON_DATA_DIR/.env`.

Run as root, the server runs as `nobody` (setpriv): a root process writes through any mode.
"""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from dotenv import dotenv_values

from tests.doubles.github import GitHubDouble
from tests.setup_browser import manifest_page, only_form, post_to_github
from tests.support import free_port

CHECKOUT = Path(__file__).resolve().parents[1]
# What the Dockerfile copies before `pip install .`: the image holds no more than the wheel.
SOURCES = ("pyproject.toml", "README.md", "bot", "webhooks")
NOBODY = 65534
STARTUP_SECONDS = 60.0


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    """A folder every user may enter (pytest's own temporary folders are root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="baton-wheel-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_server_user() -> list[str]:
    """The command prefix that runs the server as a user who is not root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("run as root without setpriv (util-linux): cannot run Baton as another user")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def interpreter(prefix: list[str]) -> str:
    """A Python 3.11+ the server's user may run: this one, else the system's."""
    candidates = [sys._base_executable, shutil.which("python3.11"), "/usr/bin/python3"]
    check = "import sys; assert sys.version_info >= (3, 11)"
    for candidate in filter(None, candidates):
        if subprocess.run([*prefix, candidate, "-c", check], capture_output=True).returncode == 0:
            return candidate
    pytest.skip(f"no Python 3.11+ that uid {NOBODY} may run (tried {candidates})")


def run(*command: str | Path, **options: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        **options,  # type: ignore[call-overload]
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(place: Path) -> Path:
    """A fresh virtualenv holding only the wheel built from the checkout and its dependencies."""
    source = copy_sources(place / "source")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", place / "wheels", source)
    [wheel] = (place / "wheels").glob("baton_bot-*.whl")
    assert "bot/github/app.yml" in zipfile.ZipFile(wheel).namelist()
    venv = place / "venv"
    run(interpreter(as_server_user()), "-m", "venv", "--without-pip", venv)
    # This process's pip fills the new virtualenv from its cache and indexes.
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"]
    run(*pip, "-q", "--find-links", place / "wheels", wheel)
    return venv


def copy_sources(source: Path) -> Path:
    source.mkdir()
    for name in SOURCES:
        if (CHECKOUT / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(CHECKOUT / name, source / name, ignore=skip)
        else:
            shutil.copy(CHECKOUT / name, source / name)
    return source


@pytest.fixture
def folders(place: Path) -> Iterator[tuple[Path, Path]]:
    """The working directory (nobody may write there) and the data directory (the server's)."""
    cwd, data = place / "read-only", place / "data"
    cwd.mkdir(mode=0o555)
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(data, NOBODY, NOBODY)
    try:
        yield cwd, data
    finally:
        cwd.chmod(0o755)
        shutil.rmtree(cwd)
        shutil.rmtree(data)


def server_environment(venv: Path, data: Path, port: int, github: GitHubDouble) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(data),
        "BATON_DATA_DIR": str(data),
        "BATON_PORT": str(port),
        "BATON_GITHUB_URL": github.url,
        "BATON_GITHUB_API_URL": github.api_url,
    }


@contextmanager
def serving(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[list[str]]:
    """`baton serve` running until the block ends; yields its stderr lines up to the one that
    says it listens (later lines are read and dropped, so the pipe never fills)."""
    server = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    assert server.stderr is not None
    reader = threading.Thread(target=_read_lines, args=(server.stderr, lines), daemon=True)
    reader.start()
    try:
        yield _until_listening(lines)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _read_lines(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _until_listening(lines: queue.Queue[str | None]) -> list[str]:
    seen: list[str] = []
    while not seen or "open this link" not in seen[-1]:
        line = lines.get(timeout=STARTUP_SECONDS)
        assert line is not None, "baton serve stopped:\n" + "\n".join(seen)
        seen.append(line)
    return seen


def test_the_installed_wheel_registers_from_a_folder_it_cannot_write(
    venv: Path, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    cwd, data = folders
    prefix = as_server_user()
    port = free_port()
    with GitHubDouble(tmp_path / "github") as github:
        env = server_environment(venv, data, port, github)
        where = run(*prefix, venv / "bin" / "python", "-c", WHERE, env=env, cwd=cwd).stdout
        run(*prefix, venv / "bin" / "baton", "db", "upgrade", env=env, cwd=cwd)
        with serving([*prefix, str(venv / "bin" / "baton"), "serve"], env, cwd) as lines:
            link = next(line.split()[-1] for line in lines if "?code=" in line and "{" not in line)
            page = register_through(link, f"http://127.0.0.1:{port}")
        with serving([*prefix, str(venv / "bin" / "baton"), "serve"], env, cwd):
            restarted = httpx.get(f"http://127.0.0.1:{port}/setup/callback", timeout=30)

    writable, app_yml = where.split()
    assert writable == "False"  # the server's user may not write its working directory
    assert Path(app_yml).is_relative_to(venv)  # app.yml comes from the installed package
    assert page.status_code == 200, page.text
    assert [registered["name"] for registered in github.registered_manifests] == [
        yaml.safe_load((CHECKOUT / "bot" / "github" / "app.yml").read_text())["name"]
    ]
    assert list(cwd.iterdir()) == []
    saved = data / ".env"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert saved.stat().st_uid == (NOBODY if prefix else os.geteuid())
    values = dotenv_values(saved)
    assert values["BATON_GITHUB_APP_ID"] == str(github.app_id)
    assert values["BATON_GITHUB_PRIVATE_KEY"] == github.private_key_pem
    assert values["BATON_WEBHOOK_SECRET"] == github.webhook_secret
    assert restarted.status_code == 404  # read back from the data directory: setup mode is over


WHERE = (
    "import os; from bot.github.manifest import APP_YML; print(os.access('.', os.W_OK), APP_YML)"
)


def register_through(link: str, base_url: str) -> httpx.Response:
    """The operator's browser: the printed link, the setup page, GitHub, back to Baton."""
    with httpx.Client(base_url=base_url, timeout=30) as browser:
        assert browser.get(link).status_code == 303
        github_answer = post_to_github(only_form(manifest_page(browser)))
        return browser.get(github_answer.headers["location"])
