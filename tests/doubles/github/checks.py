"""Check runs: their REST view and routes, and GitHub's rules for their fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.doubles.github.ci import _CiViews
from tests.doubles.github.git_data import _commit_sha
from tests.doubles.github.pulls import _PullViews
from tests.doubles.github.rest import (
    _Answer,
    _Call,
    _handles,
    _invalid_request,
    _json_answer,
    _not_found,
    _page,
    _required_text,
    _validation_failed,
)
from tests.doubles.github.state import (
    CHECK_CONCLUSIONS,
    CHECK_STATUSES,
    _CheckRun,
    _iso,
    _node_id,
    _Repository,
    _State,
    _utc_now,
)

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


class _CheckViews(_PullViews, _CiViews):
    """Check runs."""

    def check_run(self, repo: _Repository, run: _CheckRun) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/check-runs/{run.id}"
        html = f"{self.web}/{repo.full_name}/runs/{run.id}"
        return {
            "id": run.id,
            "head_sha": run.head_sha,
            "node_id": _node_id("CR", run.id),
            "external_id": run.external_id,
            "url": api,
            "html_url": html,
            "details_url": run.details_url or html,
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": run.started_at,
            "completed_at": run.completed_at,
            "output": {
                "title": run.output.get("title"),
                "summary": run.output.get("summary"),
                "text": run.output.get("text"),
                "annotations_count": 0,
                "annotations_url": f"{api}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": run.suite_id},
            "app": self.app_of(run),
            "pull_requests": [
                self.pull_minimal(repo, pull)
                for pull in repo.pulls.values()
                if pull.state == "open" and self.head_sha(repo, pull) == run.head_sha
            ],
        }


class _CheckRoutes:
    """The check run routes."""

    state: _State
    views: _Views

    @_handles("POST", "/repos/{owner}/{repo}/check-runs", needs="checks:write")
    def create_check_run(self, call: _Call) -> _Answer:
        fields = call.fields()
        name = _required_text(fields, "name")
        head_sha = _required_text(fields, "head_sha")
        if _commit_sha(call.repo.path, head_sha) != head_sha:
            raise _validation_failed(
                {"resource": "CheckRun", "field": "head_sha", "code": "invalid"}
            )
        run = _CheckRun(
            id=self.state.new_id(),
            suite_id=self.state.new_id(),
            name=name,
            head_sha=head_sha,
            status="queued",
            conclusion=None,
            started_at=_iso(_utc_now()),
            completed_at=None,
            output={},
            details_url=None,
            external_id="",
        )
        _apply_check_run_fields(run, fields)
        call.repo.check_runs[run.id] = run
        return _json_answer(201, self.views.check_run(call.repo, run))

    @_handles("PATCH", "/repos/{owner}/{repo}/check-runs/{id}", needs="checks:write")
    def update_check_run(self, call: _Call) -> _Answer:
        run = call.repo.check_runs.get(call.int_param("id"))
        if run is None:
            raise _not_found()
        _apply_check_run_fields(run, call.fields())
        return _json_answer(200, self.views.check_run(call.repo, run))

    @_handles("GET", "/repos/{owner}/{repo}/commits/{ref+}/check-runs", needs="checks:read")
    def check_runs(self, call: _Call) -> _Answer:
        repo = call.repo
        sha = _commit_sha(repo.path, call.params["ref"])
        if sha is None:
            raise _invalid_request(f"No commit found for SHA: {call.params['ref']}")
        runs = [run for run in repo.check_runs.values() if run.head_sha == sha]
        runs = [run for run in runs if call.query.get("check_name") in (None, run.name)]
        runs = [run for run in runs if call.query.get("status") in (None, run.status)]
        if call.query.get("filter", "latest") == "latest":
            newest = {run.name: run for run in runs}
            runs = [run for run in runs if newest[run.name] is run]
        page, link = _page(call, self.state.api_url, runs)
        body = {
            "total_count": len(runs),
            "check_runs": [self.views.check_run(repo, run) for run in page],
        }
        return _json_answer(200, body, link)


def _apply_check_run_fields(run: _CheckRun, fields: Mapping[str, Any]) -> None:
    """Create and update share GitHub's rules: a conclusion completes the run."""
    status = fields.get("status", run.status)
    # A run sent back to queued or in_progress drops the conclusion it had.
    reopened = "status" in fields and status != "completed"
    conclusion = fields.get("conclusion", None if reopened else run.conclusion)
    if status not in CHECK_STATUSES:
        raise _invalid_request(f'"{status}" is not a member of {list(CHECK_STATUSES)}.')
    if conclusion is not None and conclusion not in CHECK_CONCLUSIONS:
        raise _invalid_request(f'"{conclusion}" is not a member of {list(CHECK_CONCLUSIONS)}.')
    if conclusion is not None:
        status = "completed"
    if status == "completed" and conclusion is None:
        raise _invalid_request("A conclusion is required when the status is completed.")
    output = fields.get("output")
    if output is not None:
        if not isinstance(output, dict) or not output.get("title") or not output.get("summary"):
            raise _invalid_request('"output" needs "title" and "summary".')
        run.output = {key: output.get(key) for key in ("title", "summary", "text")}
    run.name = str(fields.get("name", run.name))
    run.status, run.conclusion = status, conclusion
    run.details_url = fields.get("details_url", run.details_url)
    run.external_id = str(fields.get("external_id", run.external_id))
    run.started_at = fields.get("started_at", run.started_at)
    completed_at = fields.get("completed_at") or run.completed_at or _iso(_utc_now())
    run.completed_at = completed_at if status == "completed" else None
