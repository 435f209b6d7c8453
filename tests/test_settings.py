"""Settings: read from the environment and `.env` when asked, with errors that name the variable."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from bot.runs.workspace import sandbox_limits
from bot.settings import (
    Settings,
    SettingsError,
    env_file_for_writing,
    env_files,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    import os

    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    settings = load_settings()

    assert (settings.host, settings.port, settings.executor) == ("127.0.0.1", 3000, "local")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / '.baton' / 'baton.db'}"
    assert settings.webhook_secret is None
    assert not settings.has_app_credentials


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BATON_PORT=4000\nBATON_WEBHOOK_SECRET=from-dotenv\n")
    monkeypatch.setenv("BATON_PORT", "5000")
    monkeypatch.setenv("BATON_GITHUB_APP_ID", "123")
    monkeypatch.setenv("BATON_GITHUB_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----")

    settings = load_settings()

    assert settings.port == 5000  # the environment wins over .env
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "from-dotenv"
    assert settings.has_app_credentials
    assert "from-dotenv" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BATON_PORT", "three thousand", "BATON_PORT: Input should be a valid integer"),
        (
            "BATON_MAX_PARALLEL",
            "0",
            "BATON_MAX_PARALLEL: Input should be greater than or equal to 1",
        ),
        ("BATON_EXECUTOR", "celery", "BATON_EXECUTOR: Input should be 'local' or 'procrastinate'"),
        (
            "BATON_WORKER_MODEL",
            "gpt-5",
            "BATON_WORKER_MODEL: expected 'provider/model'",
        ),
        (
            "BATON_GITHUB_API_URL",
            "ghe.example/api/v3",
            "BATON_GITHUB_API_URL: expected an http(s) URL",
        ),
        (
            "BATON_DAILY_BUDGET_USD",
            "0",
            "BATON_DAILY_BUDGET_USD: Input should be greater than 0",
        ),
        (
            "BATON_DEFAULT_TASK_BUDGET_USD",
            "five",
            "BATON_DEFAULT_TASK_BUDGET_USD: Input should be a valid number",
        ),
        (
            "BATON_SANDBOX_ALLOWED_NETWORKS",
            "10.20.0.0/16,10.30.0.1/16",
            "BATON_SANDBOX_ALLOWED_NETWORKS: 10.30.0.1/16 has host bits set; expected IPv4 CIDRs",
        ),
        (
            "BATON_SANDBOX_ALLOWED_NETWORKS",
            "fd00::/8",
            "BATON_SANDBOX_ALLOWED_NETWORKS: 'fd00::/8' is an IPv6 network",
        ),
    ],
)
def test_invalid_value_names_the_variable_and_what_it_expects(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert expected in str(raised.value)


def test_budgets_default_to_20_per_run_and_5_per_task_with_no_daily_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert (settings.default_run_budget_usd, settings.default_task_budget_usd) == (20.0, 5.0)
    assert settings.daily_budget_usd is None

    monkeypatch.setenv("BATON_DAILY_BUDGET_USD", " ")  # blank: no cap, as unset
    assert load_settings().daily_budget_usd is None
    monkeypatch.setenv("BATON_DAILY_BUDGET_USD", "150")
    monkeypatch.setenv("BATON_DEFAULT_RUN_BUDGET_USD", "8.5")
    changed = load_settings()
    assert (changed.daily_budget_usd, changed.default_run_budget_usd) == (150.0, 8.5)


def test_allowed_networks_are_a_comma_separated_list_that_reaches_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATON_SANDBOX_ALLOWED_NETWORKS", "10.20.0.0/16, 192.0.2.7/32,")

    limits = sandbox_limits(load_settings())

    assert limits.allowed_networks == (IPv4Network("10.20.0.0/16"), IPv4Network("192.0.2.7/32"))


def test_model_names_split_at_the_first_slash_only() -> None:
    settings = Settings(_env_file=None, worker_model="openai/meta-llama/Llama-3.3-70B")  # type: ignore[call-arg]

    assert settings.worker_model == "openai/meta-llama/Llama-3.3-70B"


def test_enterprise_server_urls_are_kept_without_a_trailing_slash() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        github_api_url="https://ghe.example.com/api/v3/",
        github_url="https://ghe.example.com/",
    )

    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.github_url == "https://ghe.example.com"


def test_importing_baton_reads_no_settings(tmp_path: Path) -> None:
    # An invalid environment must not break imports: settings are read on first use only.
    env = {"BATON_PORT": "not-a-port", "PATH": "/usr/bin:/bin"}
    code = "import bot.cli, webhooks.app, bot.jobs; print('imported')"

    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )

    assert result.stdout.strip() == "imported", result.stderr


def test_cli_reports_an_invalid_setting_and_exits_2(tmp_path: Path) -> None:
    env = {"BATON_PORT": "not-a-port", "BATON_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == 2
    assert "BATON_PORT: Input should be a valid integer" in result.stderr


def test_private_key_comes_from_the_variable_or_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text("-----BEGIN RSA PRIVATE KEY-----\nfrom-file\n")
    from_file = Settings(_env_file=None, github_private_key_path=key_file)  # type: ignore[call-arg]
    assert from_file.private_key_pem().endswith("from-file\n")
    inline = Settings(
        _env_file=None,  # type: ignore[call-arg]
        github_private_key="-----BEGIN RSA PRIVATE KEY-----\ninline\n",
        github_private_key_path=key_file,
    )
    assert inline.private_key_pem().endswith("inline\n")


def test_an_unreadable_private_key_file_names_the_variable(tmp_path: Path) -> None:
    missing = Settings(_env_file=None, github_private_key_path=tmp_path / "gone.pem")  # type: ignore[call-arg]
    with pytest.raises(
        SettingsError, match="BATON_GITHUB_PRIVATE_KEY_PATH: cannot read .*gone.pem"
    ):
        missing.private_key_pem()
    with pytest.raises(SettingsError, match="BATON_GITHUB_PRIVATE_KEY or"):
        Settings(_env_file=None).private_key_pem()  # type: ignore[call-arg]


# Where `.env` and the data directory are: the working directory when Baton may write there.


def test_the_data_directorys_dotenv_is_read_and_the_working_directorys_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / ".env").write_text("BATON_PORT=4000\nBATON_WEBHOOK_SECRET=from-data-dir\n")
    (tmp_path / ".env").write_text("BATON_PORT=5000\n")
    monkeypatch.setenv("BATON_DATA_DIR", str(data))

    from_files = load_settings()
    monkeypatch.setenv("BATON_PORT", "6000")
    from_environment = load_settings()

    assert env_files() == (data / ".env", Path(".env"))
    assert from_files.port == 5000  # the working directory's, written by hand, wins
    assert from_files.webhook_secret is not None
    assert from_files.webhook_secret.get_secret_value() == "from-data-dir"
    assert from_environment.port == 6000  # the environment wins over both


def test_the_working_directorys_dotenv_may_name_the_data_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".env").write_text(f"BATON_DATA_DIR={elsewhere}\n")
    (elsewhere / ".env").write_text("BATON_GITHUB_APP_ID=42\n")

    settings = load_settings()

    assert settings.data_dir == elsewhere
    assert settings.github_app_id == 42


def test_a_writable_working_directory_holds_the_data_and_the_saved_dotenv() -> None:
    settings = load_settings()

    assert settings.data_dir == Path(".baton")
    assert env_file_for_writing(settings) == Path(".env")


@pytest.mark.parametrize("xdg", ["", "relative/share"], ids=["unset", "relative"])
def test_without_a_writable_working_directory_a_per_user_folder_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str
) -> None:
    monkeypatch.setattr("bot.settings.working_directory_writable", lambda: False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", xdg)  # the XDG spec ignores a relative one
    per_user = tmp_path / "home" / ".local" / "share" / "baton"
    (tmp_path / "home").mkdir()

    settings = load_settings()

    assert settings.data_dir == per_user
    assert env_files() == (per_user / ".env", Path(".env"))
    assert env_file_for_writing(settings) == per_user / ".env"


def test_xdg_data_home_places_the_per_user_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("bot.settings.working_directory_writable", lambda: False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BATON_DATA_DIR", "")  # blank: unset

    assert load_settings().data_dir == tmp_path / "xdg" / "baton"
