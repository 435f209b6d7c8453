"""Another app's CI on the double: check runs it completes (GitHub Actions by default) with
annotations and, for Actions, a job log; the `check_suite` delivery that says so; the routes
Baton reads them through; and re-running a failed job or re-requesting a check run."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx

from tests.doubles.github.rest import (
    _Answer,
    _Call,
    _handles,
    _json_answer,
    _not_found,
)
from tests.doubles.github.state import _CheckRun, _iso, _node_id, _Repository, _State, _utc_now

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views

ACTIONS = "github-actions"
ACTIONS_APP_ID = 15368  # GitHub Actions' app id on github.com


class _CiViews:
    api: str
    web: str
    if TYPE_CHECKING:  # the double's own App, from the app views this is mixed with

        def app(self) -> dict[str, Any]: ...

    def app_of(self, run: _CheckRun) -> dict[str, Any]:
        """The app that made the check run: Baton's, or another app such as GitHub Actions."""
        if not run.app:
            return self.app()
        number = ACTIONS_APP_ID if run.app == ACTIONS else 9_000_000 + len(run.app)
        return self.app() | {
            "id": number,
            "slug": run.app,
            "node_id": _node_id("A", number),
            "client_id": f"Iv1.{number:016d}",
            "name": "GitHub Actions" if run.app == ACTIONS else run.app,
        }

    def annotation(self, annotation: dict[str, Any]) -> dict[str, Any]:
        return {
            "path": annotation["path"],
            "start_line": annotation.get("line", 1),
            "end_line": annotation.get("line", 1),
            "start_column": None,
            "end_column": None,
            "annotation_level": annotation.get("level", "failure"),
            "title": annotation.get("title", ""),
            "message": annotation["message"],
            "raw_details": None,
            "blob_href": f"{self.web}/blob/{annotation['path']}",
        }


class _CiRoutes:
    """Annotations, Actions job logs, re-running a job and re-requesting a check run."""

    state: _State
    views: _Views

    @_handles("GET", "/repos/{owner}/{repo}/check-runs/{id}/annotations", needs="checks:read")
    def annotations(self, call: _Call) -> _Answer:
        run = _check_run(call)
        return _json_answer(200, [self.views.annotation(item) for item in run.annotations])

    @_handles("GET", "/repos/{owner}/{repo}/actions/jobs/{id}/logs", needs="actions:read")
    def job_logs(self, call: _Call) -> _Answer:
        run = _check_run(call)
        if run.app != ACTIONS:
            raise _not_found()
        # GitHub answers with a redirect to the log's storage; the text is the same either way.
        return _Answer(200, run.log.encode(), [("content-type", "text/plain; charset=utf-8")])

    @_handles("POST", "/repos/{owner}/{repo}/actions/jobs/{id}/rerun", needs="actions:write")
    def rerun_job(self, call: _Call) -> _Answer:
        run = _check_run(call)
        if run.app != ACTIONS:
            raise _not_found()
        _requeue(run)
        return _json_answer(201, {})

    @_handles("POST", "/repos/{owner}/{repo}/check-runs/{id}/rerequest", needs="checks:write")
    def rerequest_check_run(self, call: _Call) -> _Answer:
        run = _check_run(call)
        _requeue(run)
        return _json_answer(201, {})


def _check_run(call: _Call) -> _CheckRun:
    run = call.repo.check_runs.get(call.int_param("id"))
    if run is None:
        raise _not_found()
    return run


def _requeue(run: _CheckRun) -> None:
    run.reruns += 1
    run.status, run.conclusion, run.completed_at = "queued", None, None


class _CiDeliveries:
    """What a test does as the repository's CI."""

    _state: _State
    _views: _Views
    _lock: threading.RLock

    if TYPE_CHECKING:  # from the deliveries this is mixed with

        def send_webhook(self, target_url: str, event: str, payload: Any) -> httpx.Response: ...

        def _delivered_to(self, repo: _Repository, sender: str) -> dict[str, Any]: ...

    def finish_check(
        self,
        full_name: str,
        head_sha: str,
        name: str,
        conclusion: str,
        *,
        app: str = ACTIONS,
        summary: str = "",
        annotations: list[dict[str, Any]] | None = None,
        log: str = "",
    ) -> int:
        """A check run `app` completed on `head_sha` (re-run, when it had one of that name
        there); its id, which for Actions is also its job's id."""
        with self._lock:
            repo = self._state.repository(full_name)
            same = [r for r in repo.check_runs.values() if (r.head_sha, r.name) == (head_sha, name)]
            run = same[-1] if same and same[-1].app == app else None
            if run is None:
                run = _CheckRun(
                    id=self._state.new_id(),
                    suite_id=self._state.new_id(),
                    name=name,
                    head_sha=head_sha,
                    status="completed",
                    conclusion=conclusion,
                    started_at=_iso(_utc_now()),
                    completed_at=None,
                    output={},
                    details_url=None,
                    external_id="",
                    app=app,
                )
                repo.check_runs[run.id] = run
            run.status, run.conclusion, run.completed_at = "completed", conclusion, _iso(_utc_now())
            title = f"{name}: {conclusion}"
            run.output = {"title": title, "summary": summary or title, "text": None}
            run.annotations, run.log = list(annotations or []), log
            return run.id

    def reruns(self, full_name: str, check_run_id: int) -> int:
        with self._lock:
            return self._state.repository(full_name).check_runs[check_run_id].reruns

    def check_suite_payload(self, full_name: str, check_run_id: int) -> dict[str, Any]:
        """The `check_suite` delivery (action `completed`) for the suite holding the run."""
        with self._lock:
            repo = self._state.repository(full_name)
            run = repo.check_runs[check_run_id]
            branches = [pull.head for pull in repo.pulls.values() if pull.state == "open"]
            suite = {
                "id": run.suite_id,
                "node_id": _node_id("CS", run.suite_id),
                "head_branch": branches[0] if branches else None,
                "head_sha": run.head_sha,
                "status": "completed",
                "conclusion": run.conclusion,
                "url": f"{self._views.api}/repos/{full_name}/check-suites/{run.suite_id}",
                "before": None,
                "after": run.head_sha,
                "pull_requests": [],
                "app": self._views.app_of(run),
                "created_at": run.started_at,
                "updated_at": run.completed_at,
                "latest_check_runs_count": 1,
                "check_runs_url": (
                    f"{self._views.api}/repos/{full_name}/check-suites/{run.suite_id}/check-runs"
                ),
            }
            sender = "github-actions[bot]" if run.app == ACTIONS else "octocat"
            delivered = self._delivered_to(repo, sender)
            return {"action": "completed", "check_suite": suite, **delivered}

    def send_check_suite(
        self, target_url: str, full_name: str, check_run_id: int
    ) -> httpx.Response:
        body = self.check_suite_payload(full_name, check_run_id)
        return self.send_webhook(target_url, "check_suite", body)
