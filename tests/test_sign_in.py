"""'Sign in with GitHub' through the GitHub double's OAuth web flow, over real HTTP with cookies
and redirects: who gets a session, what its cookie looks like, that it outlives a restart and
ends on sign-out, and that a person sees no trace of the runs of repositories they cannot read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page
from pydantic import SecretStr
from sqlmodel import Session

from bot.settings import Settings
from bot.store.models import Run
from tests.browser import screenshot
from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, as_app
from tests.doubles.github import GitHubDouble
from tests.support import FAST, count_rows, serve
from webhooks.access import OperatorAccess
from webhooks.app import create_app

HIDDEN = "octo-org/payroll"
CODE = "operator-code-for-tests"
TOKEN = "dashboard-token-for-tests"
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


@pytest.fixture
def team_settings(settings: Settings, github: GitHubDouble, engine: sa.Engine) -> Settings:
    """Baton with the double's App and OAuth client; alice can read widgets, not payroll, and
    each repository has one run."""
    github.add_repository(HIDDEN, INSTALLATION_ID, {"README.md": "# Payroll\n"})
    client_id, client_secret = github.oauth_client
    with Session(engine) as session:
        session.add(a_run("run-widgets", REPOSITORY, 7))
        session.add(a_run("run-payroll", HIDDEN, 8))
        session.commit()
    return as_app(settings, github).model_copy(
        update={
            "github_client_id": client_id,
            "github_client_secret": SecretStr(client_secret),
            "dashboard_token": SecretStr(TOKEN),
        }
    )


def a_run(run_id: str, repository: str, issue: int) -> Run:
    return Run(
        id=run_id,
        repository_id=hash(repository) % 2**40,
        repository=repository,
        issue_number=issue,
        issue_title=f"Issue {issue}",
        branch=f"baton/issue-{issue}",
    )


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    operator = OperatorAccess(setup_mode=False, code=CODE)
    with serve(create_app(settings, FAST, operator=operator)) as url:
        yield url


@pytest.fixture
def baton(team_settings: Settings, github: GitHubDouble) -> Iterator[str]:
    with served(team_settings) as url:
        github.sign_in_browser("alice", callback_url=url + "/sign-in/callback")
        yield url


def browser(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=True, timeout=30)


@contextmanager
def signed_in(url: str) -> Iterator[httpx.Client]:
    with browser(url) as client:
        sign_in(client)
        yield client


def sign_in(client: httpx.Client) -> None:
    landed = client.post("/sign-in")
    assert landed.status_code == 200
    assert landed.url.path == "/runs"


def callback_from_github(client: httpx.Client) -> str:
    """Start a sign-in and stop at the callback address GitHub sends the browser to."""
    to_github = client.post("/sign-in", follow_redirects=False)
    assert to_github.status_code == 303
    back = client.get(to_github.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    return str(back.headers["location"])


def run_ids(client: httpx.Client, **headers: str) -> list[str]:
    answer = client.get("/runs", headers=JSON | headers)
    assert answer.status_code == 200
    return sorted(run["id"] for run in answer.json())


def test_sign_in_page_offers_github(baton: str) -> None:
    page = httpx.get(baton + "/sign-in")
    assert page.status_code == 200
    assert '<form method="post" action="/sign-in">' in page.text
    assert "Sign in with GitHub" in page.text


def test_a_person_signs_in_with_github_and_sees_the_runs_they_can_read(baton: str) -> None:
    with signed_in(baton) as client:
        assert run_ids(client) == ["run-widgets"]
        assert "alice" in client.get("/sign-in").text


def test_the_state_sent_to_github_is_random_and_kept_in_this_browser(
    baton: str, github: GitHubDouble
) -> None:
    with browser(baton) as client:
        first = urlsplit(client.post("/sign-in", follow_redirects=False).headers["location"])
        second = urlsplit(client.post("/sign-in", follow_redirects=False).headers["location"])
    assert f"{first.scheme}://{first.netloc}{first.path}" == github.url + "/login/oauth/authorize"
    states = [parse_qs(found.query)["state"][0] for found in (first, second)]
    assert states[0] != states[1]
    assert len(states[0]) >= 40


@pytest.mark.parametrize("wrong", ["other-state", ""], ids=["wrong", "missing"])
def test_a_callback_with_another_state_opens_no_session(baton: str, wrong: str) -> None:
    with browser(baton) as client:
        callback = urlsplit(callback_from_github(client))
        code = parse_qs(callback.query)["code"][0]
        refused = client.get("/sign-in/callback", params={"code": code, "state": wrong})
        assert refused.status_code == 400
        assert "not started in this browser" in refused.text
        assert "baton_person" not in client.cookies
        assert client.get("/runs", headers=JSON).status_code == 401


def test_a_callback_in_a_browser_that_did_not_start_the_sign_in_is_refused(baton: str) -> None:
    with browser(baton) as victim, browser(baton) as attacker:
        callback = callback_from_github(attacker)
        refused = victim.get(callback)
        assert refused.status_code == 400
        assert victim.get("/runs", headers=JSON).status_code == 401


def test_a_code_works_once(baton: str) -> None:
    with browser(baton) as client:
        callback = urlsplit(callback_from_github(client))
        assert client.get(callback.geturl()).url.path == "/runs"
        code = parse_qs(callback.query)["code"][0]
    with browser(baton) as again:
        fresh = urlsplit(callback_from_github(again))
        state = parse_qs(fresh.query)["state"][0]
        reused = again.get("/sign-in/callback", params={"code": code, "state": state})
        assert reused.status_code == 400
        assert "used or expired" in reused.text
        assert again.get("/runs", headers=JSON).status_code == 401


def test_cookies_are_http_only_same_site_and_secure_over_https(baton: str) -> None:
    with browser(baton) as client:
        callback = callback_from_github(client)
        answer = client.get(callback, follow_redirects=False)
    cookie = session_cookie(answer)
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    assert "secure" not in cookie  # plain http on 127.0.0.1 keeps working
    # Behind a TLS proxy on this machine the scheme is https: the cookie is then Secure.
    over_https = {"X-Forwarded-Proto": "https"}
    with browser(baton) as client:
        to_github = client.post("/sign-in", headers=over_https, follow_redirects=False)
        assert "secure" in to_github.headers["set-cookie"].lower()
        back = client.get(to_github.headers["location"], follow_redirects=False)
        client.cookies.set("baton_oauth_state", state_of(back.headers["location"]))
        answer = client.get(back.headers["location"], headers=over_https, follow_redirects=False)
    assert "secure" in session_cookie(answer)


def session_cookie(answer: httpx.Response) -> str:
    cookies = [c.lower() for c in answer.headers.get_list("set-cookie")]
    found = [cookie for cookie in cookies if cookie.startswith("baton_person=")]
    assert len(found) == 1, cookies
    return found[0]


def state_of(address: str) -> str:
    return parse_qs(urlsplit(address).query)["state"][0]


def test_sessions_survive_a_restart_and_keep_only_a_digest(
    team_settings: Settings, github: GitHubDouble, engine: sa.Engine
) -> None:
    with served(team_settings) as url, browser(url) as client:
        github.sign_in_browser("alice", callback_url=url + "/sign-in/callback")
        sign_in(client)
    secret = client.cookies["baton_person"]
    with served(team_settings) as url, browser(url) as again:
        again.cookies.set("baton_person", secret)
        assert run_ids(again) == ["run-widgets"]
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT id_hash, login FROM web_sessions")).all()
    assert [row.login for row in stored] == ["alice"]
    assert secret not in stored[0].id_hash


def test_sign_out_needs_the_session_csrf_token(baton: str, engine: sa.Engine) -> None:
    with signed_in(baton) as client:
        forged = client.post("/sign-out", data={"csrf": "guess"})
        assert forged.status_code == 403
        assert run_ids(client) == ["run-widgets"]
        page = client.get("/sign-in").text
        token = page.split('name="csrf"\n value="', 1)[1].split('"', 1)[0]
        signed_out = client.post("/sign-out", data={"csrf": token})
        assert signed_out.url.path == "/sign-in"
        assert client.get("/runs", headers=JSON).status_code == 401
    assert count_rows(engine, "web_sessions") == 0


def test_a_person_sees_no_trace_of_runs_they_cannot_read(baton: str) -> None:
    with signed_in(baton) as client:
        for headers in (JSON, HTML):
            hidden = client.get("/runs/run-payroll", headers=headers)
            missing = client.get("/runs/run-nowhere", headers=headers)
            assert hidden.status_code == missing.status_code == 404
            assert hidden.text.replace("run-payroll", "X") == missing.text.replace(
                "run-nowhere", "X"
            )
        assert run_ids(client) == ["run-widgets"]
        assert client.get("/runs", params={"repository": HIDDEN}, headers=JSON).json() == []
        paged = client.get("/runs", params={"before": "run-payroll"}, headers=JSON)
        assert paged.status_code == 400
        assert "payroll" not in client.get("/runs", headers=HTML).text
        assert client.get("/runs/run-widgets", headers=JSON).status_code == 200


def test_a_person_sees_no_trace_of_runs_they_cannot_read_in_the_insights(baton: str) -> None:
    with signed_in(baton) as client:
        mine = client.get("/insights", headers=JSON).json()["by_mode"]
        theirs = client.get("/insights", params={"repository": HIDDEN}, headers=JSON).json()
        page = client.get("/insights", params={"repository": HIDDEN}, headers=HTML)
    with browser(baton) as script:
        every = script.get(
            "/insights", headers={**JSON, "Authorization": f"Bearer {TOKEN}"}
        ).json()["by_mode"]

    assert [(row["mode"], row["runs"]) for row in mine] == [("orchestrated", 1)]
    assert theirs["by_mode"] == []
    assert "No runs in this period." in page.text
    assert [(row["mode"], row["runs"]) for row in every] == [("orchestrated", 2)]


def test_who_was_given_a_role_sees_that_repository_at_the_next_sign_in(
    baton: str, github: GitHubDouble
) -> None:
    github.set_permission(HIDDEN, "alice", "read")
    with signed_in(baton) as client:
        assert run_ids(client) == ["run-payroll", "run-widgets"]


def test_the_operator_link_and_the_bearer_token_still_see_every_run(baton: str) -> None:
    with browser(baton) as operator:
        assert operator.get("/runs", params={"code": CODE}).status_code == 200
        assert run_ids(operator) == ["run-payroll", "run-widgets"]
    with browser(baton) as script:
        assert run_ids(script, Authorization=f"Bearer {TOKEN}") == ["run-payroll", "run-widgets"]


def test_without_an_oauth_client_the_sign_in_page_says_how_to_set_it_up(
    settings: Settings,
) -> None:
    with served(settings) as url:
        answer = httpx.get(url + "/sign-in")
    assert answer.status_code == 404
    assert "BATON_GITHUB_CLIENT_ID" in answer.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_chromium_signs_in_with_github_and_lands_on_the_runs(baton: str, page: Page) -> None:
    page.goto(baton + "/sign-in")
    page.get_by_role("button", name="Sign in with GitHub").click()
    page.wait_for_url(baton + "/runs")
    screenshot(page, "sign-in-landing")
    shown = page.content()
    assert "run-widgets" in shown
    assert "payroll" not in shown
    page.goto(baton + "/sign-in")
    assert "alice" in page.content()
    page.goto(baton + "/insights")
    screenshot(page, "insights")
    assert "payroll" not in page.content()
