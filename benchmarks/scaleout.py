"""Scale-out: runs per hour on one, two and three `baton worker` processes, and what a worker
killed every so often costs.

Each pass is Baton as CONTRACT §10 deploys it on many machines, here on one: `baton serve`
answers webhooks and runs no job, and `baton worker` processes (each with a data directory of its
own, all with the same `--concurrency` and as many `--attempts`) run every job, sharing a
PostgreSQL database of the pass's own (named from `--database`, made on the server at
127.0.0.1:5432, migrated with `baton db upgrade`, dropped after a clean pass) and
`BATON_EXECUTOR=procrastinate`. The workers' attempt lanes are what limits the work at once:
`BATON_MAX_PARALLEL`, the cap on tasks at work over all machines, is set to every task that
could run at once (three a run), so it never binds and the worker count alone changes.

Between them and the world sit the doubles of the tests, in this process, as
`tests/test_many_machines.py` arranges them: the GitHub double holds octo-org/widgets, where alice
(who may write) opened `--runs` issues, each labelled `baton`; the model double answers every
call `--model-seconds` after it arrives (an asynchronous wait, so calls overlap as a provider's
do). Its planner submits the four tasks of the many-machines test, T1, T2 and T3 side by side,
then T4 after them all; each worker writes its file and finishes, each review accepts. The
repository's test command, which the review of every task and the final check of every run
run in Baton's sandbox (five times a run), is a Python loop that burns `--test-cpu-seconds` of
CPU and prints how long that took; the review's prompt carries that line, so the model double
notes how long the tests took while other tests ran beside them.

The issues are twelve issues of one repository rather than one issue in each of twelve: that
is a team's repository busy with work, every run's branch is pushed to one remote and every
worker keeps one mirror, and the label and approval deliveries of the tests change only the
issue number. A run's plan is approved (`/approve-plan` commented by alice) as soon as it waits
for approval; the driver looks every quarter second.

Figures: the wall time from the first label delivered to the last of the draft pull requests
(the GitHub double's own clock for the request that opened it), runs per hour = runs / that
time, and the speed-up over one worker. Per pass, CPU seconds used meanwhile: the machine's
busy time (every process, this benchmark's or not), Baton's processes (the workers' own, the
git they ran, and `baton serve`'s), the tests (as they report their CPU time: the sandbox
hides them from the workers' count), PostgreSQL's processes (all its databases), this process
(both doubles) with the git it runs for the GitHub double, and what is left: other processes.
And the GitHub REST writes Baton made, which each process spaces a second apart.

The second pass does the same with one worker SIGKILLed every `--kill-every` seconds and
started again at once on its data directory (the first worker, then the second, ...; with one
worker it is that one). Its jobs go back to the queue once its heartbeat is `--stall-seconds`
old and another process takes them once its lease (`BATON_JOB_LEASE_SECONDS`, set by
`--lease-seconds`) ran out; both passes use the same values, so they compare.

After every pass, once no job of a run is left, it checks that nothing was lost or duplicated:
every run `pr_open` with its tests passed; one draft pull request a run, opened by one request;
each run branch four commits, one per task, with no merge; one status comment an issue, made
by one request; one check run a run, on its branch's head, made by one request; one accepted
attempt a task. Attempts a kill cut short are counted, not faults. A lost run ends its pass
(its database, logs and the double's repositories are kept, and named) and the next pass goes
on.

Run from the repository root (PostgreSQL must answer on 127.0.0.1:5432 as `postgres`):

    .venv/bin/python benchmarks/scaleout.py                       # the issue's figures
    .venv/bin/python benchmarks/scaleout.py --runs 3 --workers 1 2   # a quick look

Exit status: 0 when every pass ended and its check held, whatever the speed-up; 1 when a run
was lost (failed, stuck for a person, or not done within `--timeout`) or anything was
duplicated. SIGTERM stops the pass under way and its processes.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The doubles live with the tests, which are not installed; the repository root holds them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, WIDGETS_FILES, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
from tests.serve_process import Server, baton_environment
from tests.support import payload, wait_for
from tests.test_many_machines import FAN_IN, Worker
from tests.world import models_for, who

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
TASKS = ("T1", "T2", "T3", "T4")
WIDTH = 3  # FAN_IN's tasks that run side by side
SUBJECTS = sorted(f"{key}: Step {key}" for key in TASKS)
STATUS_MARKER = "<!-- baton:run:"
OPEN_PULL = "POST /repos/{owner}/{repo}/pulls"
OPEN_CHECK = "POST /repos/{owner}/{repo}/check-runs"
ADD_COMMENT = "POST /repos/{owner}/{repo}/issues/{number}/comments"
STUCK_STATES = frozenset({"needs_human", "failed", "cancelled", "done", "closed"})
WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
POLL_SECONDS = 0.25
SETTLE_SECONDS = 180.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1
BURN_SCRIPT = '''\
"""The tests of this repository, for a benchmark: burn a fixed CPU time, say how long it took."""
import sys
import time

cpu = float(sys.argv[1])
start = time.perf_counter()
while time.process_time() < cpu:
    pass
print(f"burned {time.process_time():.3f} CPU-s in {time.perf_counter() - start:.3f} s")
'''
BURNED = re.compile(r"burned ([\d.]+) CPU-s in ([\d.]+) s")
SANDBOXED = re.compile(r'"seconds": ([\d.]+)')


# ---------------------------------------------------------------------------------------------
# The model double: a fixed answer time, and the test timings the reviews were shown


class ModelsAnsweringIn(ModelDouble):
    """The model double, answering each call `seconds` after it arrived. The wait is
    asynchronous: the double's policy runs in a small thread pool, where sleeping calls would
    queue behind each other as no provider's do."""

    def __init__(self, seconds: float, policy: Callable[[RecordedCall], ModelReply]) -> None:
        super().__init__(policy=policy)
        self.seconds = seconds

    async def _endpoint(self, request: Request) -> Response:
        await request.body()  # read (and kept) first: a caller killed meanwhile is no error
        await asyncio.sleep(self.seconds)
        return await super()._endpoint(request)


@dataclass(frozen=True)
class TestTiming:
    cpu: float  # what the test command burned
    own_wall: float  # its own wall time for that: more than `cpu` when CPUs were busy
    sandboxed: float  # the whole sandboxed command, as Baton timed it


class FanInRuns:
    """The models of every run: the planner submits FAN_IN, workers write their files, reviews
    accept; each review's prompt gives the timing of the tests it ran, noted here."""

    def __init__(self) -> None:
        self.answer = models_for(FAN_IN)
        self.tests: list[TestTiming] = []
        self._lock = threading.Lock()

    def __call__(self, call: RecordedCall) -> ModelReply:
        if who(call)[0] == "reviewer":
            self._note_tests(call)
        return self.answer(call)

    def _note_tests(self, call: RecordedCall) -> None:
        text = "\n".join(prompt_texts(call))
        burned, sandboxed = BURNED.search(text), SANDBOXED.search(text)
        if burned is None or sandboxed is None:
            return
        timing = TestTiming(float(burned[1]), float(burned[2]), float(sandboxed[1]))
        with self._lock:
            self.tests.append(timing)


def prompt_texts(call: RecordedCall) -> list[str]:
    return [
        str(block.get("text", ""))
        for message in call.json.get("messages", [])
        for block in message.get("content", [])
        if isinstance(block, dict)
    ]


# ---------------------------------------------------------------------------------------------
# The world: a database, the repository and its issues, deliveries


def fresh_database(name: str) -> str:
    """An empty database `name` (dropped first if it was left behind); its SQLAlchemy URL."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return DATABASE_URL.format(name=name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(environment: dict[str, str]) -> None:
    command = [sys.executable, "-m", "bot.cli", "db", "upgrade"]
    subprocess.run(command, env=environment, check=True, capture_output=True)


def test_command(cpu_seconds: float) -> str:
    return f"{shlex.quote(sys.executable)} burn_cpu.py {cpu_seconds}"


def arrange(github: GitHubDouble, runs: int, cpu_seconds: float, width: int) -> None:
    """octo-org/widgets with issues 1..runs opened by alice, who may write, each labelled; its
    config runs the CPU-burning tests and lets a run's independent tasks all run at once."""
    github.add_installation(INSTALLATION_ID, "octo-org")
    github.add_repository(REPOSITORY, INSTALLATION_ID, WIDGETS_FILES, repository_id=712345678)
    github.set_permission(REPOSITORY, "alice", "write")
    for issue in issues(runs):
        github.add_issue(REPOSITORY, issue, f"Add dial {issue}", "Please add a dial.", "alice")
    config = f"test_command: {json.dumps(test_command(cpu_seconds))}\nmax_parallel: {width}\n"
    commit_files(github, {".github/baton.yml": config, "burn_cpu.py": BURN_SCRIPT})


def issues(runs: int) -> range:
    return range(1, runs + 1)


def branch(issue: int) -> str:
    return f"baton/issue-{issue}"


def label(github: GitHubDouble, hooks: str, issue: int) -> None:
    """Alice labels the issue, and GitHub delivers it."""
    body = payload("issues.labeled")
    body["issue"]["number"] = issue
    assert github.send_webhook(hooks, "issues", body).status_code == 202


def approve(github: GitHubDouble, hooks: str, issue: int) -> None:
    """Alice comments /approve-plan on the issue, and GitHub delivers it."""
    body = copy.deepcopy(payload("issue_comment.created"))
    body["issue"]["number"] = issue
    made = github.add_issue_comment(REPOSITORY, issue, "/approve-plan", user="alice")
    body["comment"] = {**body["comment"], **made}
    assert github.send_webhook(hooks, "issue_comment", body).status_code == 202


# ---------------------------------------------------------------------------------------------
# CPU time, from /proc and getrusage


def process_cpu(pid: int) -> tuple[float, float]:
    """A live process's CPU seconds: its own, and its children's that it waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since it started, over all its CPUs."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def postgres_cpu() -> float:
    """CPU seconds of PostgreSQL's processes; the postmaster's children's count includes the
    backends that ended."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += sum(process_cpu(int(entry.name)))
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while being read
    return total


def own_cpu() -> tuple[float, float]:
    """This process's CPU seconds, and those of its children it waited for."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime, children.ru_utime + children.ru_stime


@dataclass
class CpuUse:
    """CPU seconds spent during one pass, by whom, and the wall seconds it lasted."""

    wall: float = 0.0
    machine: float = 0.0  # every process on the machine
    workers: float = 0.0
    workers_children: float = 0.0  # git, as the kernel counts it: the sandboxes hide the tests
    serve: float = 0.0
    postgres: float = 0.0  # all its databases
    doubles: float = 0.0  # this process: both doubles and the driver
    doubles_git: float = 0.0  # the git the GitHub double runs
    tests: float = 0.0  # the test commands, as they report their CPU time

    @property
    def ours(self) -> float:
        return (
            self.workers
            + self.workers_children
            + self.serve
            + self.postgres
            + self.doubles
            + self.doubles_git
            + self.tests
        )


@dataclass
class CpuMeter:
    """Readings at the start of a pass; Baton's processes are read when they end."""

    started: float = field(default_factory=time.monotonic)
    machine: float = field(default_factory=machine_busy)
    postgres: float = field(default_factory=postgres_cpu)
    own: tuple[float, float] = field(default_factory=own_cpu)
    use: CpuUse = field(default_factory=CpuUse)

    def ending_worker(self, pid: int) -> None:
        own, children = process_cpu(pid)
        self.use.workers += own
        self.use.workers_children += children

    def ending_serve(self, pid: int) -> None:
        self.use.serve += sum(process_cpu(pid))

    def finish(self) -> CpuUse:
        """The pass's use, once every Baton process was read and has ended."""
        mine, children = own_cpu()
        baton = self.use.workers + self.use.workers_children + self.use.serve
        self.use.wall = time.monotonic() - self.started
        self.use.machine = machine_busy() - self.machine
        self.use.postgres = postgres_cpu() - self.postgres
        self.use.doubles = mine - self.own[0]
        self.use.doubles_git = max(0.0, children - self.own[1] - baton)
        return self.use


# ---------------------------------------------------------------------------------------------
# The machines


@dataclass(frozen=True)
class Shape:
    """What every pass shares."""

    runs: int
    concurrency: int
    model_seconds: float
    test_cpu_seconds: float
    lease_seconds: float
    stall_seconds: float
    timeout: float
    database: str


class Fleet:
    """`baton serve` and `count` workers, each with a data directory of its own, sharing the
    database; a worker killed is started again on its directory."""

    def __init__(
        self,
        github: GitHubDouble,
        models: ModelDouble,
        url: str,
        count: int,
        shape: Shape,
        folder: Path,
    ) -> None:
        many = {
            "BATON_EXECUTOR": "procrastinate",
            "BATON_JOB_LEASE_SECONDS": str(shape.lease_seconds),
            # Never reached (see the module's docstring): the workers' lanes limit the work.
            "BATON_MAX_PARALLEL": str(shape.runs * WIDTH),
        }
        self.folder = folder
        self.serve_environment = baton_environment(github, models, url, folder / "serve", **many)
        self.worker_environments = [
            baton_environment(
                github, models, url, folder / f"worker{index}", PGAPPNAME=f"baton-{index}", **many
            )
            for index in range(count)
        ]
        self.options = (
            *("--concurrency", str(shape.concurrency), "--attempts", str(shape.concurrency)),
            *("--stall-seconds", str(shape.stall_seconds)),
        )
        self.server = Server(self.serve_environment, folder)
        self.workers: list[Worker] = []
        self.meter = CpuMeter()
        self.kills = 0

    def start(self) -> None:
        migrate(self.serve_environment)
        self.meter = CpuMeter()  # after the migration, which is no part of the pass
        self.server.start()
        self.workers = [self._worker(index) for index in range(len(self.worker_environments))]

    @property
    def hooks(self) -> str:
        return f"{self.server.url}/api/github/webhooks"

    def kill_and_restart(self, index: int) -> None:
        worker = self.workers[index]
        self.meter.ending_worker(worker.process.pid)
        worker.kill()
        self.kills += 1
        self.workers[index] = self._worker(index)

    def stop(self) -> CpuUse:
        for worker in self.workers:
            if worker.process.poll() is None:
                self.meter.ending_worker(worker.process.pid)
            worker.stop()
        if self.server.process is not None and self.server.process.poll() is None:
            self.meter.ending_serve(self.server.process.pid)
        self.server.stop()
        return self.meter.finish()

    def dead_workers(self) -> list[int]:
        return [index for index, w in enumerate(self.workers) if w.process.poll() is not None]

    def _worker(self, index: int) -> Worker:
        log = self.folder / f"worker{index}-{time.monotonic_ns()}.log"
        return Worker(self.worker_environments[index], log, *self.options)


class KillSchedule:
    """SIGKILL one worker every `every` seconds, the next one each time, and start it again."""

    def __init__(self, fleet: Fleet, every: float) -> None:
        self.fleet = fleet
        self.every = every
        self.due = time.monotonic() + every
        self.turn = 0

    def tick(self) -> None:
        if self.every <= 0 or time.monotonic() < self.due:
            return
        self.fleet.kill_and_restart(self.turn % len(self.fleet.workers))
        self.turn += 1
        self.due += self.every


# ---------------------------------------------------------------------------------------------
# One pass


class RunLost(RuntimeError):
    """A run failed, stopped for a person, or did not reach its draft within the timeout."""


def run_states(engine: sa.Engine) -> dict[int, str]:
    query = "SELECT issue_number, state FROM runs"
    with engine.connect() as connection:
        return {row[0]: row[1] for row in connection.execute(sa.text(query))}


def unsettled_jobs(engine: sa.Engine) -> int:
    """Jobs of runs still queued or running, showing the status included: zero once every
    write a run had to make was made (a killed worker's jobs count until taken over)."""
    query = "SELECT count(*) FROM jobs WHERE run_id IS NOT NULL AND state IN ('queued', 'running')"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


class Driver:
    """Approves each plan once it waits for approval, keeps the kill schedule, and says when
    every run has its draft pull request; a run that can no longer get there is lost."""

    def __init__(self, fleet: Fleet, github: GitHubDouble, engine: sa.Engine, runs: int) -> None:
        self.fleet = fleet
        self.github = github
        self.engine = engine
        self.runs = runs
        self.approved: set[int] = set()
        self.kills: KillSchedule | None = None

    def all_drafted(self) -> bool:
        if self.kills is not None:
            self.kills.tick()
        dead = self.fleet.dead_workers()  # a killed worker is started again at once
        if dead:
            raise RunLost(f"worker(s) {dead} ended by themselves; see {self.fleet.folder}")
        states = run_states(self.engine)
        for issue, state in states.items():
            if state in STUCK_STATES:
                raise RunLost(f"the run of issue {issue} is {state}")
            if state == "awaiting_approval" and issue not in self.approved:
                approve(self.github, self.fleet.hooks, issue)
                self.approved.add(issue)
        return len(states) == self.runs and all(state == "pr_open" for state in states.values())


@dataclass(frozen=True)
class Outcome:
    runs: int
    workers: int
    killed: bool
    seconds: float
    kills: int
    cpu: CpuUse
    tests: list[TestTiming]
    problems: list[str]
    summary: str
    repeated: int
    writes: int

    @property
    def runs_per_hour(self) -> float:
        return 3600 * self.runs / self.seconds


def one_pass(shape: Shape, workers: int, kill_every: float) -> Outcome:
    """Every run from label to draft on `workers` workers, then the check; the database, the
    logs and the double's repositories are kept when something went wrong."""
    folder = Path(tempfile.mkdtemp(prefix=f"baton-scaleout-{workers}-"))
    database = f"{shape.database}_{workers}" + ("_killing" if kill_every else "")
    kept = f"database {database}, logs and repositories in {folder} kept"
    try:
        outcome = pass_in(folder, database, shape, workers, kill_every)
    except RunLost as lost:
        raise RunLost(f"{lost} ({kept})") from None
    if outcome.problems:
        print(f"  {kept}")
    else:
        shutil.rmtree(folder)
        drop_database(database)
    return outcome


def pass_in(folder: Path, database: str, shape: Shape, workers: int, kill_every: float) -> Outcome:
    url = fresh_database(database)
    models = FanInRuns()
    with (
        GitHubDouble(folder / "github") as github,
        ModelsAnsweringIn(shape.model_seconds, models) as model_double,
    ):
        arrange(github, shape.runs, shape.test_cpu_seconds, width=WIDTH)
        fleet = Fleet(github, model_double, url, workers, shape, folder)
        engine = sa.create_engine(url)
        try:
            try:
                fleet.start()
                seconds = measured(Driver(fleet, github, engine, shape.runs), kill_every, shape)
                settle(engine)
            finally:
                cpu = fleet.stop()
            # The reviews' tests reported their CPU; each run's final tests burn as much.
            cpu.tests = sum(t.cpu for t in models.tests) + shape.runs * shape.test_cpu_seconds
            problems, summary = examine(github, engine, shape.runs)
            repeated = repeated_attempts(engine)
        finally:
            engine.dispose()
    return Outcome(
        shape.runs,
        workers,
        kill_every > 0,
        seconds,
        fleet.kills,
        cpu,
        list(models.tests),
        problems,
        summary,
        repeated,
        rest_writes(github),
    )


def measured(driver: Driver, kill_every: float, shape: Shape) -> float:
    """Label every issue, drive the runs to their drafts, killing workers on schedule; the
    seconds from the first label to the last draft."""
    started = time.monotonic()
    for issue in issues(shape.runs):
        label(driver.github, driver.fleet.hooks, issue)
    driver.kills = KillSchedule(driver.fleet, kill_every)
    drafted(driver, shape.timeout)
    driver.kills = None  # the measurement is over: the last jobs settle undisturbed
    return last_draft(driver.github) - started


def drafted(driver: Driver, timeout: float) -> None:
    try:
        wait_for(driver.all_drafted, timeout=timeout, interval=POLL_SECONDS)
    except AssertionError:
        states = Counter(run_states(driver.engine).values())
        raise RunLost(f"not every run got its draft in {timeout:.0f} s: {dict(states)}") from None


def settle(engine: sa.Engine) -> None:
    try:
        wait_for(lambda: unsettled_jobs(engine) == 0, timeout=SETTLE_SECONDS, interval=0.5)
    except AssertionError:
        raise RunLost(f"jobs of runs still unsettled after {SETTLE_SECONDS:.0f} s") from None


def rest_writes(github: GitHubDouble) -> int:
    """Writes Baton made through GitHub's REST API with installation tokens (the ones it paces),
    tokens asked for with the App's key not counted."""
    return sum(
        r.api and r.method in WRITES and not str(r.route).startswith("POST /app/")
        for r in list(github.requests)
    )


def last_draft(github: GitHubDouble) -> float:
    """When the last draft pull request was opened, on the double's monotonic clock."""
    return max(r.at for r in list(github.requests) if r.route == OPEN_PULL and r.status == 201)


# ---------------------------------------------------------------------------------------------
# Nothing lost, nothing duplicated


def examine(github: GitHubDouble, engine: sa.Engine, runs: int) -> tuple[list[str], str]:
    """What went wrong, if anything, and a line saying what was found."""
    problems: list[str] = []
    problems += runs_problems(engine, runs)
    problems += pull_problems(github, runs)
    problems += branch_problems(github, runs)
    problems += status_problems(github, runs)
    problems += check_run_problems(github, engine, runs)
    problems += attempt_problems(engine)
    created = Counter(r.route for r in github.requests if r.method == "POST" and r.status == 201)
    summary = (
        f"{len(run_states(engine))} runs pr_open with tests passed, {len(github.pulls(REPOSITORY))}"
        f" draft pull requests ({created[OPEN_PULL]} opened), {commits_on_branches(github, runs)}"
        f" commits on {runs} branches with no merge, {status_comment_count(github, runs)} status"
        f" comments, {len(github.check_runs(REPOSITORY))} check runs ({created[OPEN_CHECK]}"
        f" created), {accepted_attempts(engine)} accepted attempts"
    )
    return problems, summary


def runs_problems(engine: sa.Engine, runs: int) -> list[str]:
    query = "SELECT issue_number, state, tests_passed FROM runs"
    with engine.connect() as connection:
        rows = list(connection.execute(sa.text(query)))
    problems = [f"{runs} runs expected, {len(rows)} found"] if len(rows) != runs else []
    return problems + [
        f"issue {issue}: run {state}, tests passed {passed}"
        for issue, state, passed in rows
        if state != "pr_open" or passed is not True
    ]


def pull_problems(github: GitHubDouble, runs: int) -> list[str]:
    pulls = Counter(pull["head"]["ref"] for pull in github.pulls(REPOSITORY))
    opened = sum(r.route == OPEN_PULL and r.status == 201 for r in github.requests)
    problems = [f"{opened} pull requests opened for {runs} runs"] if opened != runs else []
    problems += [
        f"{pull['number']} is no draft" for pull in github.pulls(REPOSITORY) if not pull["draft"]
    ]
    return problems + [
        f"{branch(issue)}: {pulls[branch(issue)]} pull requests"
        for issue in issues(runs)
        if pulls[branch(issue)] != 1
    ]


def in_double(github: GitHubDouble, *args: str) -> str:
    git_dir = github.root / f"{REPOSITORY}.git"
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def branch_problems(github: GitHubDouble, runs: int) -> list[str]:
    problems = []
    for issue in issues(runs):
        subjects = in_double(github, "log", "--format=%s", f"main..{branch(issue)}").split("\n")
        merges = in_double(github, "rev-list", "--merges", f"main..{branch(issue)}").split()
        if sorted(filter(None, subjects)) != SUBJECTS or merges:
            problems.append(f"{branch(issue)}: commits {subjects[:-1]}, {len(merges)} merges")
    return problems


def commits_on_branches(github: GitHubDouble, runs: int) -> int:
    return sum(
        int(in_double(github, "rev-list", "--count", f"main..{branch(issue)}"))
        for issue in issues(runs)
    )


def status_comments(github: GitHubDouble, issue: int) -> int:
    return sum(
        STATUS_MARKER in comment["body"] for comment in github.issue_comments(REPOSITORY, issue)
    )


def status_comment_count(github: GitHubDouble, runs: int) -> int:
    return sum(status_comments(github, issue) for issue in issues(runs))


def status_problems(github: GitHubDouble, runs: int) -> list[str]:
    posted = sum(
        r.route == ADD_COMMENT and r.status == 201 and STATUS_MARKER in str(r.json.get("body"))
        for r in github.requests
    )
    problems = [f"{posted} status comments posted for {runs} runs"] if posted != runs else []
    return problems + [
        f"issue {issue}: {status_comments(github, issue)} status comments"
        for issue in issues(runs)
        if status_comments(github, issue) != 1
    ]


def check_run_problems(github: GitHubDouble, engine: sa.Engine, runs: int) -> list[str]:
    on = Counter(check["head_sha"] for check in github.check_runs(REPOSITORY))
    created = sum(r.route == OPEN_CHECK and r.status == 201 for r in github.requests)
    problems = [f"{created} check runs created for {runs} runs"] if created != runs else []
    heads = run_heads(engine)
    return problems + [
        f"issue {issue}: {on[heads.get(issue)]} check runs on the run's head, which is"
        f" {'' if github.branch_sha(REPOSITORY, branch(issue)) == heads.get(issue) else 'not '}"
        "the branch's"
        for issue in issues(runs)
        if on[heads.get(issue)] != 1
        or github.branch_sha(REPOSITORY, branch(issue)) != heads.get(issue)
    ]


def run_heads(engine: sa.Engine) -> dict[int, str | None]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT issue_number, head_sha FROM runs"))
        return {int(issue): head for issue, head in rows}


def attempt_problems(engine: sa.Engine) -> list[str]:
    query = (
        "SELECT r.issue_number, t.key, t.state,"
        " count(*) FILTER (WHERE a.review_verdict = 'accept') "
        "FROM tasks t JOIN runs r ON r.id = t.run_id LEFT JOIN task_attempts a ON a.task_id = t.id "
        "GROUP BY r.issue_number, t.key, t.state"
    )
    with engine.connect() as connection:
        rows = list(connection.execute(sa.text(query)))
    return [
        f"issue {issue} {key}: {state}, {accepted} accepted attempts"
        for issue, key, state, accepted in rows
        if state != "integrated" or accepted != 1
    ]


def accepted_attempts(engine: sa.Engine) -> int:
    query = "SELECT count(*) FROM task_attempts WHERE review_verdict = 'accept'"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


def repeated_attempts(engine: sa.Engine) -> int:
    """Attempts beyond one a task: cut short by a kill (in the attempt or its review) and made
    again. Every review here accepts, so no attempt is sent back."""
    query = "SELECT (SELECT count(*) FROM task_attempts) - (SELECT count(*) FROM tasks)"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


# ---------------------------------------------------------------------------------------------
# Report


def print_outcome(outcome: Outcome) -> None:
    cpu, wall = outcome.cpu, outcome.seconds
    kills = f", {outcome.kills} workers killed" if outcome.killed else ""
    lines = [
        f"  last draft {wall:.1f} s after the first label: {outcome.runs_per_hour:.1f} runs/hour"
        f"{kills}, {outcome.repeated} attempts made again; {outcome.writes} GitHub REST writes"
        f" ({outcome.writes / outcome.runs:.1f} a run)",
        f"  tests: {describe_tests(outcome.tests)}",
        f"  CPU seconds in the {cpu.wall:.0f} s until the jobs settled: machine busy"
        f" {cpu.machine:.0f} of {cpu.wall * CPUS:.0f} ({cpu.machine / (cpu.wall * CPUS):.0%});"
        f" workers {cpu.workers:.0f} + their git {cpu.workers_children:.0f}; the tests"
        f" {cpu.tests:.0f}; serve {cpu.serve:.0f}; PostgreSQL {cpu.postgres:.0f}; doubles"
        f" {cpu.doubles:.0f} + their git {cpu.doubles_git:.0f}; other processes"
        f" {cpu.machine - cpu.ours:.0f}",
        f"  check: {outcome.summary}",
        "  check: " + ("nothing lost or duplicated" if not outcome.problems else "FAILED"),
        *(f"    {problem}" for problem in outcome.problems),
    ]
    print("\n".join(lines), flush=True)


def describe_tests(tests: Sequence[TestTiming]) -> str:
    if not tests:
        return "no review reported its tests' timing"
    own = [t.own_wall / t.cpu for t in tests]
    sandboxed = [t.sandboxed for t in tests]
    return (
        f"{len(tests)} reviews' test runs burned {statistics.median(t.cpu for t in tests):.2f}"
        f" CPU-s in {statistics.median(t.own_wall for t in tests):.2f} s (median; wall/CPU"
        f" median {statistics.median(own):.2f}, max {max(own):.2f}); sandboxed command"
        f" {statistics.median(sandboxed):.2f} s median, {max(sandboxed):.2f} s max"
    )


def print_table(
    title: str, passes: Sequence[tuple[int, Outcome | None]], plain: dict[int, float]
) -> None:
    """One row a worker count: a lost pass has no figures; speed-ups are over the first row."""
    print(f"\n{title}")
    print(f"{'workers':>7} {'seconds':>8} {'runs/hour':>9} {'speed-up':>8} {'vs no kills':>11}")
    first = passes[0][1]
    for workers, o in passes:
        if o is None:
            print(f"{workers:>7} {'lost':>8}")
            continue
        speed_up = f"{o.runs_per_hour / first.runs_per_hour:.2f}" if first else "n/a"
        versus = f"{o.runs_per_hour / plain[workers]:.2f}" if o.killed and workers in plain else ""
        print(f"{workers:>7} {o.seconds:>8.1f} {o.runs_per_hour:>9.1f} {speed_up:>8} {versus:>11}")


def print_header(args: argparse.Namespace, argv: Sequence[str]) -> None:
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"command: {sys.executable} {' '.join(shlex.quote(a) for a in [sys.argv[0], *argv])}")
    print(
        f"{args.runs} runs of {len(TASKS)} tasks (T1, T2, T3 side by side, then T4) in"
        f" {args.runs} issues of {REPOSITORY}; every model call answered after"
        f" {args.model_seconds} s; tests burning {args.test_cpu_seconds} CPU-s, run 5 times a run;"
        f" each worker --concurrency {args.concurrency} --attempts {args.concurrency}"
        f" --stall-seconds {args.stall_seconds}, BATON_MAX_PARALLEL {args.runs * WIDTH},"
        f" BATON_JOB_LEASE_SECONDS {args.lease_seconds}; workers {args.workers}; kill pass:"
        + (f" one worker every {args.kill_every} s" if args.kill_every > 0 else " none")
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(load)} at the start", flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Runs per hour on 1, 2, 3 `baton worker` processes through the test doubles,"
        " and again with one worker killed every so often: nothing lost or duplicated."
    )
    parser.add_argument("--runs", type=int, default=12, help="issues labelled (default 12)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts (default 1 2 3)"
    )
    parser.add_argument(
        "--model-seconds", type=float, default=0.5, help="each model call's answer time (0.5)"
    )
    parser.add_argument(
        "--test-cpu-seconds", type=float, default=1.0, help="CPU the test command burns (1.0)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=2, help="each worker's steps and attempts at once (2)"
    )
    parser.add_argument(
        "--kill-every", type=float, default=20.0, help="seconds between kills; 0: no kill pass"
    )
    parser.add_argument(
        "--lease-seconds", type=float, default=5.0, help="BATON_JOB_LEASE_SECONDS (5)"
    )
    parser.add_argument(
        "--stall-seconds", type=float, default=3.0, help="workers' --stall-seconds (3)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds a pass may take (1800)"
    )
    parser.add_argument(
        "--database",
        default="scaleout_bench",
        help="prefix of the database made for each pass, e.g. scaleout_bench_2_killing",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.concurrency < 1 or any(n < 1 for n in args.workers):
        parser.error("--runs, --concurrency and --workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # Stopped with SIGTERM, the pass under way still stops its processes on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    given = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(given)
    print_header(args, given)
    shape = Shape(
        args.runs,
        args.concurrency,
        args.model_seconds,
        args.test_cpu_seconds,
        args.lease_seconds,
        args.stall_seconds,
        args.timeout,
        args.database,
    )
    passes = [(count, 0.0) for count in args.workers]
    if args.kill_every > 0:
        passes += [(count, args.kill_every) for count in args.workers]
    results = [
        (count, kill_every, pass_reported(shape, count, kill_every)) for count, kill_every in passes
    ]
    plain = [(count, o) for count, every, o in results if not every]
    print_table("Without kills (speed-up over the first row):", plain, rates(plain))
    killed = [(count, o) for count, every, o in results if every]
    if killed:
        title = f"One worker killed every {args.kill_every:.0f} s and restarted (speed-up over"
        print_table(f"{title} the first row):", killed, rates(plain))
    failed = sum(o is None or bool(o.problems) for _, _, o in results)
    if failed:
        print(f"\ncheck: {failed} pass(es) FAILED: something was lost or duplicated")
        return 1
    print("\ncheck: nothing lost or duplicated in any pass")
    return 0


def pass_reported(shape: Shape, count: int, kill_every: float) -> Outcome | None:
    """One pass, its figures printed; None when a run was lost (the next pass goes on)."""
    killing = f", one killed every {kill_every:.0f} s" if kill_every else ""
    print(f"\n{count} worker(s){killing}:", flush=True)
    try:
        outcome = one_pass(shape, count, kill_every)
    except RunLost as lost:
        print(f"  LOST: {lost}", flush=True)
        return None
    print_outcome(outcome)
    return outcome


def rates(passes: Sequence[tuple[int, Outcome | None]]) -> dict[int, float]:
    return {count: o.runs_per_hour for count, o in passes if o is not None}


if __name__ == "__main__":
    sys.exit(main())
