"""The second half of a run: the approved plan's tasks run, are reviewed and integrated, and
the branch becomes a draft pull request.

One job drives a run. It can be killed at any moment: started again, it resets tasks that were
in flight, adopts commits it had pushed but not recorded, and carries on; the pull request, the
status comment and the check run are found again rather than made twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot import runs
from bot.codebase.tools import read_only_tools
from bot.config import RepoConfig
from bot.disk import MIB
from bot.executor import JobContext
from bot.git import ApplyConflict, GitError, Mirror, PushRejected
from bot.github.repo import GitHubError, RepoClient
from bot.github.scopes import EXECUTE
from bot.llm.agent import AgentFailed
from bot.llm.budget import Budget, BudgetExceeded, InFlight
from bot.llm.metered import MeteredModel
from bot.llm.recording import StoreRecorder, run_spend, run_total, task_spend
from bot.llm.registry import model_name_for
from bot.llm.types import Model, ModelFailed
from bot.plan.render import (
    Finding,
    RunProgress,
    TaskProgress,
    markdown_text,
    render_pull_request,
    render_status,
)
from bot.plan.schema import Plan, PlanTask
from bot.planning import (
    budget_limits,
    chosen_models,
    day_cap,
    end_run,
    load_run,
    repo_client,
    show_status,
    updated_mirror,
)
from bot.review import ReviewVerdict, review
from bot.revisions import answer_review_comments
from bot.sandbox import CommandResult, Sandbox, SandboxLimits, SandboxUnavailable
from bot.scheduler import (
    RUNNING_STATES,
    TaskView,
    blocked_for_good,
    effort_estimate,
    finished,
    ready_to_start,
)
from bot.settings import Settings
from bot.setups import SetupOutputs
from bot.store.models import (
    AttemptStatus,
    PlanRevision,
    Run,
    RunState,
    Task,
    TaskAttempt,
    TaskState,
    TimelineEvent,
)
from bot.store.types import utcnow
from bot.task_rows import add_task_rows
from bot.workers.attempt import AttemptPlan, RepoCommands, WorkerAttempt, describe_task
from bot.workers.roles import FinishInput

log = logging.getLogger(__name__)

# A worker this unsure of its own work goes to a person instead of the reviewer.
CONFIDENCE_FLOOR = 0.5
LIVE_STATUS_SECONDS = 3.0
POLL_SECONDS = 0.5
TEST_COMMANDS = (
    ("pyproject.toml", "python3 -m pytest -q"),
    ("setup.py", "python3 -m pytest -q"),
    ("package.json", "npm test"),
    ("go.mod", "go test ./..."),
    ("Cargo.toml", "cargo test"),
)


def sandbox_limits(settings: Settings) -> SandboxLimits:
    """The sandbox's limits, with the data disk's floor and the networks the operator set."""
    return SandboxLimits(
        min_free_disk_bytes=settings.min_free_disk_mb * MIB,
        allowed_networks=settings.sandbox_allowed_networks,
    )


def default_test_command(files: Sequence[str]) -> str:
    """The obvious test command for a repository, from the files at its root."""
    present = set(files)
    return next((command for marker, command in TEST_COMMANDS if marker in present), "true")


async def execute_run(context: JobContext, run_id: str) -> None:
    """Job: run an approved plan to a draft pull request, or to a person who must decide."""
    run = await load_run(context, run_id)
    if run.state != RunState.executing:
        return
    execution = await Execution.prepare(context, run)
    await execution.drive()


class RunCancelled(Exception):
    """The run was cancelled; nothing more is pushed."""


@dataclass
class _Outcome:
    state: TaskState
    reason: str | None = None
    # The reason is Baton's own words (a budget's numbers), fit to show on the issue.
    notice: bool = False


class Execution:
    def __init__(
        self,
        context: JobContext,
        run: Run,
        repo: RepoClient,
        mirror: Mirror,
        config: RepoConfig,
        commands: RepoCommands,
    ) -> None:
        self.context = context
        self.run = run
        self.repo = repo
        self.mirror = mirror
        self.config = config
        self.commands = commands
        self.integration = asyncio.Lock()
        self._last_status = 0.0
        self._in_flight = InFlight()  # the run's model calls under way, for its budget
        self._slots = asyncio.Lock()  # counting worker slots and taking one is one step
        self.setup_outputs = SetupOutputs(context.integrations.mirrors.data_dir, run.id)

    @classmethod
    async def prepare(cls, context: JobContext, run: Run) -> Execution:
        mirror = await updated_mirror(context, run, EXECUTE)
        repo = repo_client(context, run, EXECUTE)
        config = RepoConfig.model_validate(run.config)
        base = run.base_sha or await mirror.resolve((await repo.repository()).default_branch)
        files = await mirror.files_at(base)
        commands = RepoCommands(
            test=config.test_command or default_test_command(files),
            lint=config.lint_command,
            setup=config.setup_command,
        )
        execution = cls(context, run, repo, mirror, config, commands)
        await execution._ready_tasks(base)
        await execution._adopt_pushed()
        return execution

    async def _adopt_pushed(self) -> None:
        """Commits this run pushed but did not record (it died in between) count as integrated."""
        remote = await self.mirror.branch_head(self.run.branch or "")
        since = self.run.head_sha or self.run.base_sha
        if remote is None or since is None or remote == since:
            return
        for sha, key in await self.mirror.task_commits(since, remote, self.run.id):
            await self._record_integration(key, sha)
            await self._set_state(key, TaskState.integrated, "found pushed after a restart")

    async def drive(self) -> None:
        running: dict[str, asyncio.Task[_Outcome]] = {}
        try:
            for key in await self._left_awaiting_approval():
                resumed = self._guarded(key, resumed=True)
                running[key] = asyncio.create_task(resumed, name=f"task-{key}")
            while True:
                if await self._cancelled():
                    return
                async with self._slots:
                    views = await self._views()
                    for key in ready_to_start(
                        views, run_cap=self.config.max_parallel, global_free=await self._free()
                    ):
                        if key in running:
                            continue  # still settling from the last round
                        await self._set_state(key, TaskState.running)
                        running[key] = asyncio.create_task(self._guarded(key), name=f"task-{key}")
                if not running and self._nothing_can_start(views):
                    break
                if not running:
                    await asyncio.sleep(POLL_SECONDS)  # other runs hold every slot: wait
                    continue
                done, _ = await asyncio.wait(
                    running.values(), timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for key in [key for key, task in running.items() if task in done]:
                    outcome = running.pop(key).result()
                    await self._set_state(key, outcome.state, outcome.reason, outcome.notice)
                await self._live_status()
        finally:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
            if await self._cancelled():
                await self._stop_everything()
        await self._complete()

    @staticmethod
    def _nothing_can_start(views: list[TaskView]) -> bool:
        """Every task is done, stopped, or waits on one that stopped: a person must act."""
        waiting = {v.key for v in views if v.state == TaskState.pending}
        return finished(views) or waiting <= set(blocked_for_good(views))

    async def _guarded(self, key: str, resumed: bool = False) -> _Outcome:
        """The task's outcome; a failure of Baton's own (GitHub, git, a budget) ends the task, not
        the run's job, so the rest of the run carries on and a person is told."""
        try:
            return await (self._resume_approval(key) if resumed else self._do_task(key))
        except BudgetExceeded as exceeded:
            return _Outcome(TaskState.escalated, f"budget: {exceeded}", notice=True)
        except RunCancelled:
            return _Outcome(TaskState.cancelled, "the run was cancelled")
        except (GitError, GitHubError, AgentFailed, ModelFailed, SandboxUnavailable) as error:
            log.warning("task %s stopped: %s", key, error)
            return _Outcome(TaskState.failed, str(error))

    async def _stop_everything(self) -> None:
        """After `/cancel`: unfinished tasks and their attempts are marked cancelled."""

        def stop(session: Session) -> None:
            open_tasks = select(Task).where(
                Task.run_id == self.run.id,
                col(Task.state).not_in([TaskState.integrated, TaskState.skipped]),
            )
            for task in session.exec(open_tasks):
                task.state, task.updated_at = TaskState.cancelled, utcnow()
            open_attempts = select(TaskAttempt).where(
                TaskAttempt.run_id == self.run.id, TaskAttempt.status == AttemptStatus.running
            )
            for attempt in session.exec(open_attempts):
                attempt.status, attempt.ended_at = AttemptStatus.cancelled, utcnow()

        await self.context.store.run(stop)
        await self._let_go_of_pins()
        # Shown last, so a live update that raced the cancel cannot leave "Executing" up.
        reason = (await load_run(self.context, self.run.id)).error or "cancelled"
        heading = f"**Cancelled**: {markdown_text(reason)}."
        await show_status(self.context, self.run, self.repo, await self._status_text(heading))

    # Tasks

    async def _do_task(self, key: str, feedback: str | None = None) -> _Outcome:
        for round_number in range(1, self.config.review_rounds + 1):
            last = round_number == self.config.review_rounds
            outcome, feedback = await self._attempt_round(key, feedback, last)
            if outcome is not None:
                return outcome
        return _Outcome(TaskState.failed, f"not accepted after {self.config.review_rounds} rounds")

    async def _attempt_round(
        self, key: str, feedback: str | None, last: bool
    ) -> tuple[_Outcome | None, str | None]:
        task = await self._task(key)
        if task.state not in RUNNING_STATES:
            await self._take_slot(key)  # back from a gate or a conflict: a worker runs again
        plan_task = describe_task(task)
        base = self.run.head_sha or self.run.base_sha or ""
        worker = WorkerAttempt(
            self.context.store,
            self.mirror,
            self.commands,
            lambda attempt_id: self._model(task, attempt_id),
            ticket=self.run.issue_title,
            sandbox_limits=sandbox_limits(self.context.settings),
            toolchains=self.context.settings.sandbox_toolchains,
            setup_outputs=self.setup_outputs,
        )
        number = task.attempts + 1
        await self._count_attempt(key, number)
        # The run's base commit holds no worker's change: only there may setup reach out.
        pristine = base == self.run.base_sha
        result = await worker.run(
            AttemptPlan(
                self.run.id, task.id or 0, plan_task, number, base, feedback, setup_network=pristine
            )
        )
        if result.status == AttemptStatus.escalated:
            # A worker's attempt escalates only when a budget stopped it.
            return _Outcome(TaskState.escalated, result.error, notice=True), None
        if result.status != AttemptStatus.succeeded or result.finish is None:
            return _Outcome(TaskState.failed, result.error), None
        if result.finish.confidence < CONFIDENCE_FLOOR:
            reason = f"the worker's confidence was {result.finish.confidence:.2f}"
            return _Outcome(TaskState.escalated, reason), None
        await self._set_state(key, TaskState.reviewing)
        verdict = await self._review(
            task, result.attempt_id, result.commit_sha, base, result.finish
        )
        await self._record_verdict(result.attempt_id, verdict)
        if verdict.verdict == "escalate":
            return _Outcome(TaskState.escalated, verdict.feedback), None
        if verdict.verdict == "revise":
            # Sent back with rounds left: retried; on the last round the attempt failed.
            status = AttemptStatus.failed if last else AttemptStatus.retried
            await self._mark_attempt(result.attempt_id, status)
            return None, verdict.feedback
        return await self._accepted(key, task, result.commit_sha)

    async def _accepted(
        self, key: str, task: Task, commit_sha: str | None
    ) -> tuple[_Outcome | None, str | None]:
        instead = await self._approval(key) if task.needs_approval else None
        if instead is not None:
            return _Outcome(instead, "not approved: a person chose otherwise"), None
        if commit_sha is None:
            return _Outcome(TaskState.integrated), None  # nothing changed: nothing to commit
        try:
            await self._integrate(key, commit_sha)
        except ApplyConflict as conflict:
            return None, f"Your change conflicts with the run branch now:\n{conflict.hunks}"
        return _Outcome(TaskState.integrated), None

    async def _resume_approval(self, key: str) -> _Outcome:
        """A task a dead process left waiting for `/approve-task` waits again; once approved, the
        commit its last attempt had accepted is integrated, and no worker runs again."""
        task = await self._task(key)
        accepted = await self._accepted_attempt(task.id or 0)
        if accepted is None:
            return _Outcome(TaskState.pending, "no accepted work on record: it starts over")
        outcome, feedback = await self._accepted(key, task, accepted.commit_sha)
        return outcome or await self._do_task(key, feedback)

    async def _review(
        self, task: Task, attempt_id: int, commit_sha: str | None, base: str, finish: FinishInput
    ) -> ReviewVerdict:
        worktree = await self.mirror.add_worktree(
            self.run.id, f"{task.key}-review", commit_sha or base
        )
        try:
            diff = await worktree.diff_from(base)
            tests = await self._tests_on(worktree.path)
            model = await self._model(task, attempt_id, reviewer=True)
            tools = read_only_tools(worktree.path)
            return await review(model, tools, describe_task(task), finish, diff, tests)
        except (AgentFailed, ModelFailed) as failure:
            return ReviewVerdict(
                verdict="escalate", feedback=f"the review could not finish: {failure}"
            )
        finally:
            await worktree.remove()

    async def _tests_on(self, path: Path) -> CommandResult | None:
        settings = self.context.settings
        sandbox = Sandbox(
            path,
            limits=sandbox_limits(settings),
            extra_read_only=[*settings.sandbox_toolchains, self.mirror.path],
        )
        if self.commands.setup:
            await self.setup_outputs.restore(sandbox)
            # A worker's change is in this worktree: its setup script may be the worker's too.
            await sandbox.run(self.commands.setup, network=False)
        return await sandbox.run(self.commands.test)

    async def _integrate(self, key: str, commit_sha: str) -> None:
        """The accepted commit onto the run branch, pushed with a lease; one task at a time.

        A person's push to the branch is kept: the commit goes on top of it, and if it does not
        apply there, ApplyConflict sends the task back to its worker with the hunks."""
        async with self.integration:
            if await self._cancelled():
                raise RunCancelled(self.run.id)
            await self._follow_pushes()
            head = self.run.head_sha or self.run.base_sha or ""
            worktree = await self.mirror.add_worktree(self.run.id, "integration", head)
            try:
                new_head = await worktree.apply_commit(commit_sha)
            finally:
                await worktree.remove()
            remote = await self.mirror.branch_head(self.run.branch or "")
            try:
                await self.mirror.push(self.run.branch or "", new_head, expected=remote)
            except PushRejected:
                await self.mirror.update()
                raise
            await self._record_integration(key, new_head)
        await self._let_go_of_pins(key)

    async def _follow_pushes(self) -> None:
        """Take the branch as GitHub has it when a person pushed on top of Baton's work."""
        await self.mirror.update()
        remote = await self.mirror.branch_head(self.run.branch or "")
        ours = self.run.head_sha or self.run.base_sha
        if remote is None or ours is None or remote == ours:
            return
        if not await self.mirror.descends(remote, ours):
            raise PushRejected(
                f"the run branch {self.run.branch} was rewritten; Baton does not overwrite it",
                command="git push",
                branch=self.run.branch or "",
                expected=ours,
                reason="the branch no longer contains Baton's work",
            )

        def record(session: Session) -> None:
            run = session.get(Run, self.run.id)
            if run is not None:
                run.head_sha = remote
            runs.record_event(session, self.run.id, "branch.moved", f"a push moved it to {remote}")

        await self.context.store.run(record)
        self.run.head_sha = remote

    # Completion

    async def _complete(self) -> None:
        views = await self._views()
        if await self._cancelled():
            return
        stuck = [v.key for v in views if v.state not in ("integrated", "skipped")]
        if stuck:
            await self._needs_human(stuck, blocked_for_good(views))
            return
        if self.run.head_sha is None:
            await self._nothing_to_propose()
            return
        head = self.run.head_sha
        worktree = await self.mirror.add_worktree(self.run.id, "final", head)
        try:
            tests = await self._tests_on(worktree.path)
        finally:
            await worktree.remove()
        await self._open_pull_request(tests, head)

    async def _open_pull_request(self, tests: CommandResult | None, head: str) -> None:
        passed = tests is not None and tests.exit_code == 0
        repository = await self.repo.repository()
        body = await self._pull_request_body(tests)
        pull = await self.repo.open_draft_pull_request(
            self.run.branch or "",
            repository.default_branch,
            f"{self.run.issue_title} (#{self.run.issue_number})",
            body,
        )
        await self.repo.update_pull_request_body(pull.number, body)
        summary = (
            "Every task was accepted; the tests pass."
            if passed
            else "The tests fail on the branch."
        )
        check_id = await self.repo.find_check_run(head)
        if check_id is None:
            check_id = await self.repo.create_check_run(
                head, "completed", "Baton", summary, conclusion="success" if passed else "failure"
            )
        else:
            await self.repo.update_check_run(
                check_id,
                "completed",
                "Baton",
                summary,
                conclusion="success" if passed else "failure",
            )
        heading = f"**Draft pull request** #{pull.number} is open. {summary}"
        await show_status(self.context, self.run, self.repo, await self._status_text(heading))
        await answer_review_comments(self.context, self.run.id, self.repo, pull.number)
        await self._finish_run(pull.number, check_id)

    async def _pull_request_body(self, tests: CommandResult | None) -> str:
        return render_pull_request(
            self.run.issue_number,
            await self._progress(),
            await self._findings(),
            tests_passed=tests is not None and tests.exit_code == 0,
            test_output=tests.output if tests is not None else None,
        )

    async def _findings(self) -> list[Finding]:
        """What each accepted static analyst reported; its task adds no commit, so the pull
        request is where its findings go."""

        def read(session: Session) -> list[Finding]:
            analysts = session.exec(
                select(Task)
                .where(
                    Task.run_id == self.run.id,
                    Task.role == "static_analyst",
                    Task.state == TaskState.integrated,
                )
                .order_by(col(Task.id))
            )
            found = []
            for task in analysts:
                accepted = session.exec(
                    select(TaskAttempt)
                    .where(
                        TaskAttempt.task_id == task.id,
                        TaskAttempt.status == AttemptStatus.succeeded,
                        TaskAttempt.review_verdict == "accept",
                    )
                    .order_by(col(TaskAttempt.number).desc())
                ).first()
                if accepted is not None:
                    said = [accepted.summary or "", accepted.notes or ""]
                    text = "\n\n".join(part.strip() for part in said if part.strip())
                    found.append(Finding(task.key, task.title, text))
            return found

        return await self.context.store.run(read)

    async def _nothing_to_propose(self) -> None:
        """Every task was skipped or changed nothing: the run ends without a pull request."""
        reason = "no task changed a file, so there is nothing to propose"
        await end_run(self.context, self.run, self.repo, RunState.done, reason)
        await self._let_go_of_pins()
        done = await self._status_text(f"**Done**: {reason}.")
        await show_status(self.context, self.run, self.repo, done)

    async def _needs_human(self, stuck: list[str], blocked: list[str]) -> None:
        def park(session: Session) -> None:
            run = session.get(Run, self.run.id)
            if run is not None:
                run.state, run.updated_at = RunState.needs_human, utcnow()
                runs.record_event(session, self.run.id, "run.needs_human", ", ".join(stuck))

        await self.context.store.run(park)
        text = (
            f"**Needs a person**: {', '.join(markdown_text(key) for key in stuck)} did not "
            "finish. Answer with `/retry Tn` or `/skip Tn`."
        )
        notices = await self.context.store.run(lambda session: self._notices(session, stuck))
        if notices:
            text += "\n\n" + "\n".join(
                f"- **{markdown_text(key)}** stopped: {markdown_text(why)}" for key, why in notices
            )
        await show_status(self.context, self.run, self.repo, await self._status_text(text))

    def _notices(self, session: Session, keys: Sequence[str]) -> list[tuple[str, str]]:
        """Why each of `keys` stopped, where its last state change left words for the issue."""
        found = []
        for key in keys:
            query = (
                select(TimelineEvent)
                .where(
                    TimelineEvent.run_id == self.run.id,
                    TimelineEvent.task_key == key,
                    col(TimelineEvent.kind).startswith("task."),
                )
                .order_by(col(TimelineEvent.id).desc())
            )
            last = session.exec(query).first()
            if last is not None and last.data.get("notice"):
                found.append((key, last.message))
        return found

    # State

    async def _ready_tasks(self, base: str) -> None:
        """Task rows for the approved plan; tasks a dead process left in flight start over."""

        def ready(session: Session) -> None:
            run = session.get(Run, self.run.id)
            assert run is not None
            if run.base_sha is None:
                run.base_sha = base
            approved = _approved_revisions(session, self.run.id)
            assert approved, "an executing run has an approved revision"
            existing = {
                t.key: t for t in session.exec(select(Task).where(Task.run_id == self.run.id))
            }
            # The plan, then each review's tasks: every approved revision adds its own.
            for revision in approved:
                add_task_rows(session, self.run.id, revision, self.config, existing)
            for task in existing.values():
                if task.state in (TaskState.running, TaskState.reviewing):
                    task.state = TaskState.pending
            for attempt in session.exec(
                select(TaskAttempt).where(
                    TaskAttempt.run_id == self.run.id, TaskAttempt.status == AttemptStatus.running
                )
            ):
                attempt.status, attempt.error = (
                    AttemptStatus.failed,
                    "interrupted: the process stopped",
                )
            self.run.base_sha = run.base_sha
            self.run.head_sha = run.head_sha

        await self.context.store.run(ready)

    async def _left_awaiting_approval(self) -> list[str]:
        """Tasks a dead process left waiting for `/approve-task`: this process waits for none."""
        return [v.key for v in await self._views() if v.state == TaskState.awaiting_approval]

    async def _accepted_attempt(self, task_id: int) -> TaskAttempt | None:
        """The task's last attempt if the reviewer accepted it; its commit is the accepted work."""

        def read(session: Session) -> TaskAttempt | None:
            last = session.exec(
                select(TaskAttempt)
                .where(TaskAttempt.task_id == task_id)
                .order_by(col(TaskAttempt.number).desc())
            ).first()
            if last is None or last.review_verdict != "accept":
                return None
            session.expunge(last)
            return last

        return await self.context.store.run(read)

    async def _views(self) -> list[TaskView]:
        def read(session: Session) -> list[TaskView]:
            tasks = session.exec(
                select(Task).where(Task.run_id == self.run.id).order_by(col(Task.id))
            )
            return [
                TaskView(
                    t.key,
                    t.state,
                    tuple(t.depends_on),
                    tuple(t.files),
                    t.needs_approval,
                    effort_estimate(t.effort),
                )
                for t in tasks
            ]

        return await self.context.store.run(read)

    def _task_in(self, session: Session, key: str) -> Task:
        return session.exec(select(Task).where(Task.run_id == self.run.id, Task.key == key)).one()

    async def _task(self, key: str) -> Task:
        def read(session: Session) -> Task:
            task = self._task_in(session, key)
            session.expunge(task)
            return task

        return await self.context.store.run(read)

    async def _set_state(
        self, key: str, state: TaskState, reason: str | None = None, notice: bool = False
    ) -> None:
        """Move the task to `state`; with `notice`, the reason may be shown on the issue."""

        def change(session: Session) -> None:
            task = self._task_in(session, key)
            task.state, task.updated_at = state, utcnow()
            data: dict[str, object] = {"notice": True} if notice else {}
            message = reason or state
            runs.record_event(
                session, self.run.id, f"task.{state}", message, task_key=key, data=data
            )

        await self.context.store.run(change)

    async def _count_attempt(self, key: str, number: int) -> None:
        def count(session: Session) -> None:
            task = self._task_in(session, key)
            task.attempts = number
            task.approved_by = None  # new work: an approval was for the change a person saw

        await self.context.store.run(count)

    async def _record_verdict(self, attempt_id: int, verdict: ReviewVerdict) -> None:
        def record(session: Session) -> None:
            attempt = session.get(TaskAttempt, attempt_id)
            if attempt is not None:
                attempt.review_verdict, attempt.review_feedback = verdict.verdict, verdict.feedback

        await self.context.store.run(record)

    async def _mark_attempt(self, attempt_id: int, status: AttemptStatus) -> None:
        def mark(session: Session) -> None:
            attempt = session.get(TaskAttempt, attempt_id)
            if attempt is not None:
                attempt.status = status

        await self.context.store.run(mark)

    async def _record_integration(self, key: str, head: str) -> None:
        def record(session: Session) -> None:
            run = session.get(Run, self.run.id)
            task = self._task_in(session, key)
            if run is not None:
                run.head_sha, run.updated_at = head, utcnow()
            task.commit_sha = head
            task.state = TaskState.integrated  # with the head, so a crash cannot redo the task
            runs.record_event(session, self.run.id, "task.pushed", head, task_key=key)

        await self.context.store.run(record)
        self.run.head_sha = head

    async def _finish_run(self, pull_number: int, check_id: int) -> None:
        def finish(session: Session) -> None:
            run = session.get(Run, self.run.id)
            if run is not None:
                run.state, run.pull_request_number, run.check_run_id = (
                    RunState.pr_open,
                    pull_number,
                    check_id,
                )
                run.cost_usd = run_spend(session, self.run.id)
                run.updated_at = utcnow()

        await self.context.store.run(finish)
        self.run.check_run_id = check_id
        await self._let_go_of_pins()

    async def _cancelled(self) -> bool:
        def state(session: Session) -> str | None:
            run = session.get(Run, self.run.id)
            return run.state if run else None

        return await self.context.store.run(state) == RunState.cancelled

    async def _approval(self, key: str) -> TaskState | None:
        """Wait for `/approve-task`: None once approved, else the state a person or `/cancel`
        moved the task to instead (`/skip`, `/retry`)."""
        await self._set_state(key, TaskState.awaiting_approval)
        while not await self._cancelled():
            task = await self._task(key)
            if task.approved_by:
                return None
            if task.state != TaskState.awaiting_approval:
                return TaskState(task.state)
            await asyncio.sleep(POLL_SECONDS)
        return TaskState.cancelled

    async def _take_slot(self, key: str) -> None:
        """Wait until both caps leave a worker slot, then hold it: the task is running."""
        while True:
            if await self._cancelled():
                raise RunCancelled(self.run.id)
            async with self._slots:
                views = await self._views()
                running = sum(view.state in RUNNING_STATES for view in views)
                if running < self.config.max_parallel and await self._free() > 0:
                    await self._set_state(key, TaskState.running)
                    return
            await asyncio.sleep(POLL_SECONDS)

    async def _let_go_of_pins(self, key: str | None = None) -> None:
        """Unpin the task's commit, or all of the run's: best effort, since a pin left behind
        costs a little disk and the work it kept is on the branch or no longer wanted."""
        try:
            await self.mirror.unpin(self.run.id, key)
        except GitError as error:
            log.warning("pins of run %s (%s) stay: %s", self.run.id, key or "all tasks", error)

    async def _free(self) -> int:
        def running(session: Session) -> int:
            query = (
                select(sa.func.count())
                .select_from(Task)
                .where(col(Task.state).in_([TaskState.running, TaskState.reviewing]))
            )
            return int(session.exec(query).one())

        return self.context.settings.max_parallel - await self.context.store.run(running)

    async def _model(self, task: Task, attempt_id: int, *, reviewer: bool = False) -> Model:
        """The worker's (or the reviewer's) model, metered against what the task and run spent."""
        models = chosen_models(self.config)
        name = model_name_for(
            "orchestrator" if reviewer else task.role, self.context.settings, models
        )
        prices = self.context.integrations.prices.with_overrides(self.config.price_overrides())
        role = "reviewer" if reviewer else task.role
        recorder = StoreRecorder(self.context.store, role, self.run.id, task.id, attempt_id)

        def spent(session: Session) -> Budget:
            used = task_spend(session, task.id or 0)
            return Budget(
                budget_limits(self.context, self.config),
                used,
                run_spend(session, self.run.id),
                run_spent=self._run_spend,
                in_flight=self._in_flight,
                daily=day_cap(self.context),
            )

        budget = await self.context.store.run(spent)
        return MeteredModel(self.context.integrations.model_factory(name), prices, budget, recorder)

    async def _run_spend(self) -> float:
        return await self.context.store.run(lambda session: run_spend(session, self.run.id))

    # Status

    async def _live_status(self) -> None:
        if time.monotonic() - self._last_status < LIVE_STATUS_SECONDS:
            return
        self._last_status = time.monotonic()
        try:
            text = await self._status_text("**Executing**")
            await show_status(self.context, self.run, self.repo, text)
        except Exception:  # the work goes on; the next update or the final one catches up
            log.warning("the status comment of run %s was not updated", self.run.id, exc_info=True)

    async def _status_text(self, heading: str) -> str:
        return render_status(heading, await self._progress())

    async def _progress(self) -> RunProgress:
        """The run's plan (its approved revisions as one), every task as it stands, the spend."""

        def read(session: Session) -> RunProgress:
            revisions = _approved_revisions(session, self.run.id)
            spent, unpriced = run_total(session, self.run.id)
            return RunProgress(
                plan=_final_plan([Plan.model_validate(revision.plan) for revision in revisions]),
                revisions=[revision.number for revision in revisions],
                tasks=self._task_progress(session),
                tokens=spent.tokens,
                usd=spent.usd,
                unpriced_calls=unpriced,
            )

        return await self.context.store.run(read)

    def _task_progress(self, session: Session) -> list[TaskProgress]:
        """Each task with its state, spend, attempts, and the models its attempts recorded
        (the configured one before any has)."""
        configured = chosen_models(self.config)
        used: dict[int, list[str]] = {}
        for attempt in session.exec(
            select(TaskAttempt)
            .where(TaskAttempt.run_id == self.run.id)
            .order_by(col(TaskAttempt.number))
        ):
            models = used.setdefault(attempt.task_id, [])
            if attempt.model and attempt.model not in models:
                models.append(attempt.model)
        rows = []
        for task in session.exec(
            select(Task).where(Task.run_id == self.run.id).order_by(col(Task.id))
        ):
            spend = task_spend(session, task.id or 0)
            models = used.get(task.id or 0) or [
                model_name_for(task.role, self.context.settings, configured)
            ]
            rows.append(
                TaskProgress(
                    key=task.key,
                    title=task.title,
                    state=str(task.state),
                    role=task.role,
                    model=", ".join(models),
                    tokens=spend.tokens,
                    usd=spend.usd,
                    attempts=task.attempts,
                )
            )
        return rows


def _final_plan(approved: Sequence[Plan]) -> Plan:
    """The approved revisions as the one plan carried out: every summary, and each task once,
    from the first revision that has it (as its task row was made)."""
    tasks: dict[str, PlanTask] = {}
    for plan in approved:
        for task in plan.tasks:
            tasks.setdefault(task.id, task)
    summary = "\n\n".join(plan.summary for plan in approved)
    return Plan(summary=summary, tasks=list(tasks.values()))


def _approved_revisions(session: Session, run_id: str) -> Sequence[PlanRevision]:
    """The run's approved plan revisions, oldest first: together they are its plan."""
    query = (
        select(PlanRevision)
        .where(PlanRevision.run_id == run_id, col(PlanRevision.approved_by).is_not(None))
        .order_by(col(PlanRevision.number))
    )
    return session.exec(query).all()
