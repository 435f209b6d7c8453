"""What a run costs Baton itself: a task's own steps, GitHub API calls, the review prompt cache.

Whole runs go through the doubles of the tests, over HTTP, as `tests/test_execution.py` drives
them (`tests.world.world_of`): the GitHub double delivers `issues.labeled`, the planner answers
with a plan, `/approve-plan` is commented, and Baton runs the tasks to a draft pull request. Each
size is a plan of diamonds, T1 -> (T2, T3) -> T4, then T5 -> (T6, T7) -> T8 independent of the
first, and so on (the last one cut short when the size is not a multiple of four), so a run has
both chained tasks and independent ones that run side by side (two at a time: the repository's
default `max_parallel`; its `max_tasks` is raised to the size). The model double answers at
once: each worker writes its own file, then finishes; the reviewer accepts. The repository's
test command is the running Python's pytest, in the sandbox, as in the tests, with plugin
autoloading off: the widgets use none, and loading those installed for Baton's own tests took
about a second a run. Figures taken before that include the second; each run prints the test
command's own time, so runs compare through it. Baton uses SQLite
in a fresh temporary directory, the tests' quick executor, and GitHub writes without pacing
(`GitHubTuning(write_interval=0.0)`).

A task's own steps, from what Baton records about each task:

- span: its `task.running` timeline event to its `task.pushed` event (the accepted commit is on
  the run branch on GitHub);
- less its model calls: the `latency_ms` of its rows in `model_calls` (the worker's and the
  reviewer's), which is the time inside the provider call only: the request to the double and
  the SDK reading the answer. Budget checks and recording the call stay in, as Baton's own work;
- less the time it waited for another task's integration: integrations go one at a time, so
  one starts at the later of its review's end (the reviewer's call recorded) and the push before
  it (the previous `task.pushed`); the time before that is waiting, not a step of this task.

What is left is split into the worker attempt (start to the attempt's `ended_at`: worktree,
context files, tools, commit; the tools' own `tool_calls.duration_ms` shown apart), review
evidence (attempt end to the reviewer's answer: worktree, diff, the repository's tests in the
sandbox) and integration and push (fetch, apply onto the branch head, push with a lease). The
figure is the sum over tasks, and that sum divided by the number of tasks. The wall time of the
run would not do: independent tasks overlap, so it is less than the sum of their steps, and it
holds waits that belong to no task (the executor picking up a job, the scheduler's turn between
tasks). The run's steps outside any task (preparing the execution before the first task starts;
final tests, draft pull request, check run and status after the last push) are printed apart.
There is no write pacing to exclude: it is set to zero. After each run the repository's test
command is also run alone, a few times, in Baton's sandbox on the run branch's files, so one can
see how much of the review evidence is the repository's own tests rather than Baton.

Two things make the figures a little worse than on a real deployment, and one a little better:
Baton and both doubles share one Python process (as in the tests), so the doubles' request
handling competes for the interpreter; tasks that run side by side share the machine's CPUs;
and a fetch or push to the GitHub double is a loopback round trip, where GitHub would add tens
to hundreds of milliseconds a request.

GitHub API calls: every REST request the GitHub double answered from the moment the label is
delivered until the run is `pr_open` and no job is queued or running, installation token
requests included, split into planning (until `/approve-plan`) and execution, and counted by
route. Git's smart HTTP requests (fetches and pushes) are counted apart: they are not REST calls.

Review prompt cache: the share of the prompt tokens of the orchestrator's review calls (the
`model_calls` rows of role `reviewer`) that were read from cache, cache_read / (input +
cache_read + cache_write). The model double reports whatever usage its script gives it (100
uncached input tokens a call unless told), so left alone it would make this figure 0% whatever
Baton sends. This benchmark's scripted model therefore reports the usage Anthropic's prompt cache
would give each request, by the rules Anthropic documents: the prompt is tools, then system
blocks, then message blocks; a block marked `cache_control` is a breakpoint, and the prefix
ending at one is written to the model's cache when it reaches the model's minimum cacheable
length (4,096 tokens for Opus 4.5 and 4.6 and Haiku 4.5, 2,048 for Sonnet 4.6 and the Haiku 3
models, 1,024 for the others); a later request reads the longest cached prefix that ends at one
of its breakpoints or at one of the 20 blocks before one. Tokens are estimated at four
characters each (no tokenizer is at hand); the five-minute lifetime never runs out in a run
this short; concurrent requests see each other's entries at once, where Anthropic's would only
once the first answer has begun. So the figure says what Baton's prompt layout lets Anthropic's
cache do, not what a provider measured. Beside it: the same share for the workers' calls, and
the stable prefix of each role's calls (the tokens up to its first breakpoint: tools and
system), against the minimum its model caches.

Run from the repository root:

    .venv/bin/python benchmarks/run_overhead.py               # 4 and 12 tasks, once each
    .venv/bin/python benchmarks/run_overhead.py --tasks 4 12 --repeat 3

Each run prints its figures; at the end a table gives each size's medians over its runs.
Exit status: 0 after clean runs whether or not a goal holds; 1 when a run did not end in a draft
pull request with one accepted attempt and one commit per task, or its tests failed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

# The doubles live with the tests, which are not installed; the repository root holds them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.sandbox import CommandResult, Sandbox
from bot.settings import Settings
from bot.store.db import create_engine
from bot.store.migrate import upgrade
from bot.store.models import ModelCall, Run, Task, TaskAttempt, TimelineEvent, ToolCall
from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import RecordedRequest
from tests.doubles.models import ModelReply, RecordedCall, ScriptedToolCall
from tests.support import REPOSITORY_TESTS, SECRET
from tests.world import ISSUE, World, plan, submit, task, wait_explained, who, world_of

DEFAULT_SIZES = (4, 12)
GOAL_SECONDS_PER_TASK = 1.0
GOAL_CALLS_BASE = 10
GOAL_CALLS_PER_TASK = 3
GOAL_CACHE_SHARE = 0.70
RUN_TIMEOUT = 900.0
OPEN_PULL = "POST /repos/{owner}/{repo}/pulls"
BRANCH = f"baton/issue-{ISSUE}"
TEST_RUNS = 3
TEST_COMMAND = REPOSITORY_TESTS
ACCEPT = ModelReply(
    tool_calls=[ScriptedToolCall("submit_review", {"verdict": "accept", "feedback": "Good."})]
)
CHARS_PER_TOKEN = 4
LOOKBACK_BLOCKS = 20
# Anthropic's minimum cacheable prompt by model family; a shorter prefix is not cached.
MINIMUM_CACHED = (
    ("opus-4-6", 4096),
    ("opus-4-5", 4096),
    ("haiku-4-5", 4096),
    ("sonnet-4-6", 2048),
    ("3-haiku", 2048),
    ("3-5-haiku", 2048),
)
MINIMUM_CACHED_OTHERWISE = 1024


# ---------------------------------------------------------------------------------------------
# The plan and the scripted models


def file_of(key: str) -> str:
    return f"src/widgets/part_{key.lower()}.py"


def diamonds(size: int) -> dict[str, Any]:
    """`size` tasks as diamonds of four, T1 -> (T2, T3) -> T4, each diamond on its own."""
    tasks = []
    for index in range(size):
        group, place = divmod(index, 4)
        first = 4 * group + 1
        depends_on = [[], [f"T{first}"], [f"T{first}"], [f"T{first + 1}", f"T{first + 2}"]]
        key = f"T{index + 1}"
        tasks.append(task(key, depends_on[place], [file_of(key)]))
    return plan(*tasks)


class CacheUse(NamedTuple):
    """Tokens of one request's prompt as Anthropic's cache would bill them."""

    uncached: int
    read: int
    written: int
    stable: int  # up to the first breakpoint: the part meant to be the same across calls


class PromptCache:
    """Anthropic's prompt cache as its documentation describes it (see the module docstring):
    what one request reads from it and writes to it, its entries kept per model."""

    def __init__(self) -> None:
        self._entries: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def use(self, request: Mapping[str, Any]) -> CacheUse:
        model = str(request.get("model", ""))
        minimum = minimum_cached(model)
        digest = hashlib.sha256()
        ends: list[tuple[str, int]] = []  # each block boundary: the prefix's digest and tokens
        breakpoints: list[int] = []
        total = 0
        for block, marked in prompt_blocks(request):
            digest.update(block.encode())
            total += math.ceil(len(block) / CHARS_PER_TOKEN)
            ends.append((digest.hexdigest(), total))
            if marked:
                breakpoints.append(len(ends) - 1)
        with self._lock:
            read = 0
            for point in breakpoints:
                for at in range(max(0, point - LOOKBACK_BLOCKS), point + 1):
                    if (model, ends[at][0]) in self._entries:
                        read = max(read, ends[at][1])
            cached_to = read
            for point in breakpoints:
                prefix, tokens = ends[point]
                if tokens >= minimum and tokens > read:
                    self._entries.add((model, prefix))
                    cached_to = max(cached_to, tokens)
        stable = ends[breakpoints[0]][1] if breakpoints else 0
        return CacheUse(total - cached_to, read, cached_to - read, stable)


def minimum_cached(model: str) -> int:
    return next(
        (tokens for family, tokens in MINIMUM_CACHED if family in model), MINIMUM_CACHED_OTHERWISE
    )


def prompt_blocks(request: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The request's prompt in cache order (tools, system, messages): each block as canonical
    text without its cache marker, and whether it carries one."""

    def shown(prefix: str, block: Mapping[str, Any]) -> tuple[str, bool]:
        rest = {name: value for name, value in block.items() if name != "cache_control"}
        return prefix + json.dumps(rest, sort_keys=True), "cache_control" in block

    blocks = [shown("tool:", tool) for tool in request.get("tools") or []]
    system = request.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    blocks += [shown("system:", block) for block in system]
    for message in request.get("messages") or []:
        content = message.get("content") or []
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks += [shown(f"{message.get('role')}:", block) for block in content]
    return blocks


class ScriptedModels:
    """The planner submits the plan; a worker writes its file, then finishes; the reviewer
    accepts. Each answer reports the usage the prompt cache gives the request, and the stable
    prefix of each role's requests is noted with the model asked."""

    def __init__(self, the_plan: dict[str, Any]) -> None:
        self.plan = the_plan
        self.cache = PromptCache()
        self.prefixes: dict[str, list[tuple[str, int]]] = {}

    def __call__(self, call: RecordedCall) -> ModelReply:
        role, key = who(call)
        if role == "planner":
            reply = submit(self.plan)
        elif role == "reviewer":
            reply = ACCEPT
        elif len(call.json["messages"]) == 1:
            write = {"path": file_of(str(key)), "content": f"NAME = {key!r}\n"}
            reply = ModelReply("- write_file", [ScriptedToolCall("write_file", write)])
        else:
            finish = {"summary": f"Wrote {file_of(str(key))}.", "confidence": 0.9}
            reply = ModelReply("- finish", [ScriptedToolCall("finish", finish)])
        if call.api != "anthropic":
            return reply
        use = self.cache.use(call.json)
        self.prefixes.setdefault(role, []).append((str(call.json["model"]), use.stable))
        return reply._replace(
            input_tokens=use.uncached, cache_read_tokens=use.read, cache_write_tokens=use.written
        )


# ---------------------------------------------------------------------------------------------
# One run


@dataclass(frozen=True)
class Figures:
    """One run's figures; seconds are sums over its tasks unless named otherwise."""

    own: float
    worker: float
    tools: float
    review: float
    integration: float
    model: float
    waiting: float
    model_calls: int
    before_tasks: float  # execution prepared, until the first task starts
    after_tasks: float  # the last push, until the run is pr_open
    execution_wall: float  # /approve-plan recorded, until pr_open
    planning_wall: float  # the label sent, until the plan waits for approval
    test_command: float  # the repository's tests alone in the sandbox, measured apart
    rest_planning: int
    rest_execution: int
    rest_after_pull: int  # of the execution's: after the one that opened the pull request
    git_requests: int
    review_cache: float
    review_prompt_tokens: int
    worker_cache: float


@dataclass(frozen=True)
class Outcome:
    size: int
    figures: Figures
    routes: Counter[str]
    git: Counter[str]
    prefixes: dict[str, tuple[str, int]]  # role: the model asked, its longest stable prefix


class RunFailed(RuntimeError):
    """The run did not end as a clean run must: a draft pull request, one accepted attempt and
    one commit per task."""


def run_once(size: int, workdir: Path) -> Outcome:
    url = f"sqlite:///{workdir / 'baton.db'}"
    engine = create_engine(url)
    upgrade(engine)
    settings = Settings(
        _env_file=None,
        database_url=url,
        data_dir=workdir / "data",
        webhook_secret=SECRET,
    )
    models = ScriptedModels(diamonds(size))
    try:
        with world_of(workdir, settings) as world:
            config = f"test_command: {TEST_COMMAND}\nmax_tasks: {max(size, 8)}\n"
            commit_files(world.github, {".github/baton.yml": config})
            world.models.policy = models
            labelled = time.monotonic()
            world.label()
            reach(world, engine, "awaiting_approval")
            planned = time.monotonic()
            world.comment("/approve-plan")
            reach(world, engine, "pr_open")
            wait_explained(engine, lambda: idle(engine), "let its jobs finish", RUN_TIMEOUT)
            requests = [r for r in list(world.github.requests) if r.at >= labelled]
            check_clean(world, engine, size)
            tests = test_command_seconds(world, workdir / "branch")
        prefixes = {
            role: max(seen, key=lambda pair: pair[1]) for role, seen in models.prefixes.items()
        }
        return outcome(engine, size, requests, planned, planned - labelled, prefixes, tests)
    finally:
        engine.dispose()


def reach(world: World, engine: sa.Engine, state: str) -> None:
    """Wait until the run is in `state`; RunFailed at once if it stops in another."""
    stops = {state, "failed", "cancelled", "needs_human", "done", "closed"}
    wait_explained(engine, lambda: world.run_state(engine) in stops, f"reach {state}", RUN_TIMEOUT)
    if world.run_state(engine) != state:
        with Session(engine) as session:
            run = session.exec(select(Run)).one()
        raise RunFailed(f"the run stopped {run.state}, not {state}: {run.error}")


def idle(engine: sa.Engine) -> bool:
    query = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one()) == 0


def check_clean(world: World, engine: sa.Engine, size: int) -> None:
    with Session(engine) as session:
        attempts = session.exec(select(TaskAttempt)).all()
        tasks = session.exec(select(Task)).all()
    accepted = [a for a in attempts if a.review_verdict == "accept" and a.status == "succeeded"]
    integrated = [t for t in tasks if t.state == "integrated"]
    pulls = world.github.pulls(REPOSITORY)
    commits = branch_commits(world)
    if (
        not (len(attempts) == len(accepted) == len(integrated) == commits == size)
        or len(pulls) != 1
    ):
        raise RunFailed(
            f"{size} tasks: {len(integrated)} integrated, {len(attempts)} attempts of which"
            f" {len(accepted)} accepted, {commits} commits, {len(pulls)} pull requests"
        )


def branch_commits(world: World) -> int:
    """Commits on the run branch of the GitHub double that are not on main."""
    return int(in_double(world, "rev-list", "--count", f"main..{BRANCH}"))


def in_double(world: World, *args: str) -> bytes:
    git_dir = world.github.root / f"{REPOSITORY}.git"
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, check=True
    )
    return done.stdout


def test_command_seconds(world: World, tree: Path) -> float:
    """The repository's test command alone, in Baton's sandbox on the run branch's files, as
    the review runs it: the median of a few runs, in seconds."""
    with tarfile.open(fileobj=io.BytesIO(in_double(world, "archive", BRANCH))) as archive:
        archive.extractall(tree, filter="data")
    sandbox = Sandbox(tree, extra_read_only=sorted({Path(sys.prefix), Path(sys.base_prefix)}))

    async def timed() -> list[CommandResult]:
        return [await sandbox.run(TEST_COMMAND) for _ in range(TEST_RUNS)]

    results = asyncio.run(timed())
    failed = [result.output[-500:] for result in results if result.exit_code != 0]
    if failed:
        raise RunFailed(f"the test command failed on the run branch: {failed[0]}")
    return statistics.median(result.seconds for result in results)


# ---------------------------------------------------------------------------------------------
# Reading the figures


@dataclass(frozen=True)
class TaskTimes:
    started: datetime
    attempt_ended: datetime
    review_ended: datetime
    pushed: datetime
    worker_model: float
    review_model: float
    tools: float
    calls: int


def outcome(
    engine: sa.Engine,
    size: int,
    requests: Sequence[RecordedRequest],
    planned: float,
    planning_wall: float,
    prefixes: dict[str, tuple[str, int]],
    tests: float,
) -> Outcome:
    with Session(engine) as session:
        run = session.exec(select(Run)).one()
        times = task_times(session, run.id)
        approved = session.exec(
            select(TimelineEvent.created_at).where(
                TimelineEvent.run_id == run.id, TimelineEvent.kind == "plan.approved"
            )
        ).one()
        calls = session.exec(select(ModelCall).where(ModelCall.run_id == run.id)).all()
    pushes = sorted(t.pushed for t in times)
    first_start = min(t.started for t in times)
    worker = review = integration = waiting = 0.0
    for one in times:
        worker += seconds(one.started, one.attempt_ended) - one.worker_model
        review += seconds(one.attempt_ended, one.review_ended) - one.review_model
        earlier = [moment for moment in pushes if moment < one.pushed]
        integration_started = max([one.review_ended, *earlier[-1:]])
        integration += seconds(integration_started, one.pushed)
        waiting += seconds(one.review_ended, integration_started)
    rest = [r for r in requests if r.api]
    opened = min(r.at for r in rest if r.route == OPEN_PULL)
    figures = Figures(
        own=worker + review + integration,
        worker=worker,
        tools=sum(t.tools for t in times),
        review=review,
        integration=integration,
        model=sum(t.worker_model + t.review_model for t in times),
        waiting=waiting,
        model_calls=sum(t.calls for t in times),
        before_tasks=seconds(approved, first_start),
        after_tasks=seconds(pushes[-1], run.updated_at),
        execution_wall=seconds(approved, run.updated_at),
        planning_wall=planning_wall,
        test_command=tests,
        rest_planning=sum(r.at < planned for r in rest),
        rest_execution=sum(r.at >= planned for r in rest),
        rest_after_pull=sum(r.at > opened for r in rest),
        git_requests=sum(r.route == "git" for r in requests),
        review_cache=cache_share(c for c in calls if c.role == "reviewer"),
        review_prompt_tokens=sum(prompt_tokens(c) for c in calls if c.role == "reviewer"),
        worker_cache=cache_share(c for c in calls if c.task_id and c.role != "reviewer"),
    )
    routes = Counter(str(r.route) for r in rest)
    git = Counter(git_service(r) for r in requests if r.route == "git")
    return Outcome(size, figures, routes, git, prefixes)


def task_times(session: Session, run_id: str) -> list[TaskTimes]:
    events = session.exec(
        select(TimelineEvent)
        .where(TimelineEvent.run_id == run_id, col(TimelineEvent.task_key).is_not(None))
        .order_by(col(TimelineEvent.id))
    ).all()
    found = []
    for row in session.exec(select(Task).where(Task.run_id == run_id).order_by(col(Task.id))):
        attempt = session.exec(select(TaskAttempt).where(TaskAttempt.task_id == row.id)).one()
        calls = session.exec(select(ModelCall).where(ModelCall.task_id == row.id)).all()
        reviews = [call for call in calls if call.role == "reviewer"]
        tool_ms = session.exec(
            select(sa.func.coalesce(sa.func.sum(ToolCall.duration_ms), 0.0)).where(
                ToolCall.attempt_id == attempt.id
            )
        ).one()
        kinds = {
            event.kind: event.created_at for event in reversed(events) if event.task_key == row.key
        }
        if attempt.ended_at is None or not reviews:
            raise RunFailed(f"{row.key} has no finished attempt or no review on record")
        found.append(
            TaskTimes(
                started=kinds["task.running"],
                attempt_ended=attempt.ended_at,
                review_ended=max(call.created_at for call in reviews),
                pushed=kinds["task.pushed"],
                worker_model=sum(c.latency_ms for c in calls if c.role != "reviewer") / 1000,
                review_model=sum(c.latency_ms for c in reviews) / 1000,
                tools=float(tool_ms) / 1000,
                calls=len(calls),
            )
        )
    return found


def seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def prompt_tokens(call: ModelCall) -> int:
    return call.input_tokens + call.cache_read_tokens + call.cache_write_tokens


def cache_share(calls: Iterable[ModelCall]) -> float:
    rows = list(calls)
    total = sum(prompt_tokens(call) for call in rows)
    return sum(call.cache_read_tokens for call in rows) / total if total else math.nan


def git_service(request: RecordedRequest) -> str:
    service = request.query.get("service") or request.path.rsplit("/", 1)[-1]
    return {"git-upload-pack": "fetch", "git-receive-pack": "push"}.get(service, service)


# ---------------------------------------------------------------------------------------------
# Report


def goal_calls(size: int) -> int:
    return GOAL_CALLS_BASE + GOAL_CALLS_PER_TASK * size


def print_outcome(outcome: Outcome) -> None:
    f, size = outcome.figures, outcome.size
    per = 1 / size
    git = ", ".join(f"{name} {count}" for name, count in sorted(outcome.git.items()))
    routes = ", ".join(f"{count} {short(route)}" for route, count in outcome.routes.most_common())
    prefixes = "; ".join(
        f"{role} {tokens:,} tokens ({model} caches from {minimum_cached(model):,})"
        for role, (model, tokens) in sorted(outcome.prefixes.items())
        if role != "planner"
    )
    lines = [
        f"  task's own steps: {f.own:.2f} s in all, {f.own * per:.3f} s per task"
        f" (goal < {GOAL_SECONDS_PER_TASK:.0f} s)",
        f"    per task: worker attempt {f.worker * per:.3f} s (its tools {f.tools * per:.3f} s),"
        f" review evidence {f.review * per:.3f} s, integration and push"
        f" {f.integration * per:.3f} s",
        f"    the repository's test command, which the review runs once a task, takes"
        f" {f.test_command:.3f} s alone in the sandbox (measured apart on the run branch)",
        f"    left out, per task: {f.model_calls * per:.1f} model calls taking"
        f" {f.model * per:.3f} s; waiting for another task's integration {f.waiting * per:.3f} s",
        f"  run: label to plan {f.planning_wall:.2f} s; /approve-plan to draft pull request"
        f" {f.execution_wall:.2f} s, of which before the first task {f.before_tasks:.2f} s and"
        f" after the last push {f.after_tasks:.2f} s",
        f"  GitHub REST calls: {f.rest_planning + f.rest_execution}"
        f" (goal <= {goal_calls(size)}): planning {f.rest_planning}, execution"
        f" {f.rest_execution} ({f.rest_after_pull} after the pull request was opened);"
        f" git HTTP requests {f.git_requests} ({git})",
        f"    by route: {routes}",
        f"  prompt tokens read from cache: review calls {percent(f.review_cache)} of"
        f" {f.review_prompt_tokens:,} (goal >= {GOAL_CACHE_SHARE:.0%}), workers' calls"
        f" {percent(f.worker_cache)}",
        f"    stable prefix (tools, system) of a call: {prefixes}",
    ]
    print("\n".join(lines), flush=True)


def short(route: str) -> str:
    return route.replace("/repos/{owner}/{repo}", "…")


def percent(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{share:.1%}"


COLUMNS = (
    ("tasks", 5),
    ("own s/task", 10),
    ("worker", 7),
    ("review", 7),
    ("integrate", 9),
    ("waiting", 7),
    ("tests", 6),
    ("wall s", 7),
    ("REST", 5),
    ("goal", 5),
    ("git", 4),
    ("review cache", 12),
    ("worker cache", 12),
)


def print_medians(results: Mapping[int, Sequence[Figures]]) -> None:
    print(
        "\nMedians: seconds per task of the task's own steps and their parts; seconds of one run"
        " of the repository's tests alone; wall seconds from /approve-plan to the draft pull"
        " request; GitHub REST calls per run and the goal for them; git HTTP requests; the share"
        " of prompt tokens read from cache:"
    )
    print(" ".join(f"{name:>{width}}" for name, width in COLUMNS))
    for size, runs in results.items():

        def median(name: str, runs: Sequence[Figures] = runs) -> float:
            return statistics.median(float(getattr(figures, name)) for figures in runs)

        values = (
            str(size),
            f"{median('own') / size:.3f}",
            f"{median('worker') / size:.3f}",
            f"{median('review') / size:.3f}",
            f"{median('integration') / size:.3f}",
            f"{median('waiting') / size:.3f}",
            f"{median('test_command'):.3f}",
            f"{median('execution_wall'):.2f}",
            f"{median('rest_planning') + median('rest_execution'):.0f}",
            str(goal_calls(size)),
            f"{median('git_requests'):.0f}",
            percent(median("review_cache")),
            percent(median("worker_cache")),
        )
        print(
            " ".join(f"{value:>{width}}" for value, (_, width) in zip(values, COLUMNS, strict=True))
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Baton's own time per task, GitHub calls per run and the review prompt"
        " cache, on whole runs through the test doubles."
    )
    parser.add_argument(
        "--tasks",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="run sizes in tasks (default 4 12)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each size; medians after (default 1)"
    )
    args = parser.parse_args(argv)
    if any(not 1 <= size <= 40 for size in args.tasks):
        parser.error("--tasks must be in 1..40")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be in 1..20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[int, list[Figures]] = {}
    for size in args.tasks:
        for number in range(1, args.repeat + 1):
            print(f"\n{size} tasks, run {number} of {args.repeat}:", flush=True)
            started = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory(prefix="baton-overhead-") as scratch:
                    outcome = run_once(size, Path(scratch))
            except (RunFailed, AssertionError) as failure:
                print(f"FAILED: {failure}")
                return 1
            print_outcome(outcome)
            print(f"  ({time.perf_counter() - started:.1f} s of real time)")
            results.setdefault(size, []).append(outcome.figures)
    print(f"\n{args.repeat} run(s) of each size.")
    print_medians(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
