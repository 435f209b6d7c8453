"""A four-task run whose `baton serve` is killed (SIGKILL) at each step boundary in turn and
started again each time: inside a step, right after its effect reached GitHub or a model and
before Baton recorded it, and between two steps. It still ends with one pull request, one
status comment, one commit per task and one check run (CONTRACT §8)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
from tests.serve_process import Server, label, run_state, say, status_comments, task_state
from tests.world import (
    FILES,
    FOUR_TASKS,
    ISSUE,
    TEST_COMMAND,
    branch_log,
    models_for,
    unsettled_jobs,
    wait_explained,
    who,
)

Request = tuple[str, str, int]  # method, path and status of a request to the GitHub double


@dataclass(frozen=True)
class Kill:
    """A moment to kill the server at: a request GitHub answered (before the answer leaves),
    a model call (before it is answered), or a state the database shows."""

    moment: str
    request: Callable[[Request], bool] | None = None
    call: Callable[[RecordedCall], bool] | None = None
    stored: Callable[[sa.Engine], bool] | None = None


def answered(method: str, path: str, status: int) -> Callable[[Request], bool]:
    pattern = re.compile(path)
    return lambda request: request[::2] == (method, status) and bool(pattern.fullmatch(request[1]))


def asked(role: str, but: str | None = None) -> Callable[[RecordedCall], bool]:
    """A model call from `role`, for any task but `but`."""

    def matches(call: RecordedCall) -> bool:
        asker, key = who(call)
        return asker == role and (but is None or key != but)

    return matches


def task_in(key: str, *states: str) -> Callable[[sa.Engine], bool]:
    return lambda engine: task_state(engine, key) in states


COMMENTS = f"/repos/{REPOSITORY}/issues/{ISSUE}/comments"
UNDER_WAY = ("running", "reviewing", "accepted", "integrated")
# In the order a run meets them; each is used once, the first time it is seen after the last
# (a state, or any of several calls, so that a moment passed unseen still comes again).
KILLS = [
    Kill("plan: the planner is at work", call=asked("planner")),
    Kill("status: the comment is posted, not yet recorded", answered("POST", COMMENTS, 201)),
    Kill("advance, then attempt: T1 is marked running", stored=task_in("T1", *UNDER_WAY)),
    Kill("attempt: a review is under way", call=asked("reviewer")),
    Kill("attempt, then integrate: T1 is accepted", stored=task_in("T1", *UNDER_WAY[2:])),
    Kill(
        "integrate: the branch is made at T1's commit, not yet recorded",
        answered("POST", f"/repos/{REPOSITORY}/git/refs", 201),
    ),
    Kill("attempt: a later worker is at work", call=asked("worker", but="T1")),
    Kill("integrate, then finish: T4 is integrated", stored=task_in("T4", "integrated")),
    Kill(
        "finish: the pull request is open, not yet recorded",
        answered("POST", f"/repos/{REPOSITORY}/pulls", 201),
    ),
    Kill(
        "finish: the check run is made, not yet recorded",
        answered("POST", f"/repos/{REPOSITORY}/check-runs", 201),
    ),
    Kill(
        "status: the comment is edited",
        answered("PATCH", rf"/repos/{REPOSITORY}/issues/comments/\d+", 200),
    ),
]


class Killer:
    """Kills the server at each of `kills` in turn, the first time its moment comes."""

    def __init__(self, server: Server, kills: list[Kill]) -> None:
        self.server = server
        self.pending = list(kills)
        self.done: list[str] = []
        self._lock = threading.Lock()  # the doubles call from their own threads

    def on_request(self, method: str, path: str, status: int) -> None:
        self._kill_if(
            lambda kill: kill.request is not None and kill.request((method, path, status))
        )

    def on_call(self, call: RecordedCall) -> None:
        self._kill_if(lambda kill: kill.call is not None and kill.call(call))

    def on_state(self, engine: sa.Engine) -> None:
        self._kill_if(lambda kill: kill.stored is not None and kill.stored(engine))

    def holding_kills(self) -> threading.Lock:
        """Held, no kill is under way: a process killed a moment ago may not look alive yet."""
        return self._lock

    def _kill_if(self, now: Callable[[Kill], bool]) -> None:
        with self._lock:
            if self.pending and now(self.pending[0]):
                self.done.append(self.pending.pop(0).moment)
                self.server.kill()


def killing(
    killer: Killer, policy: Callable[[RecordedCall], ModelReply]
) -> Callable[[RecordedCall], ModelReply]:
    def answer(call: RecordedCall) -> ModelReply:
        killer.on_call(call)
        return policy(call)

    return answer


def carry_on(server: Server, killer: Killer, engine: sa.Engine, until: Callable[[], bool]) -> None:
    """Let the run go on, starting the server again after each kill, until `until()` holds
    and every kill due by then was made; the server is then serving."""

    def reached() -> bool:
        killer.on_state(engine)
        if server.is_dead():
            lapse_leases(engine)
            server.launch()
        with killer.holding_kills():
            return bool(until()) and not server.is_dead()

    wait_explained(engine, reached, f"carry on past {killer.done[-1:]}", timeout=180)
    server.wait_until_serving()


def lapse_leases(engine: sa.Engine) -> None:
    # The dead process's leases end now rather than in two seconds: it alone held any.
    query = "UPDATE jobs SET lease_expires_at = :past WHERE state = 'running'"
    with engine.begin() as connection:
        connection.execute(sa.text(query), {"past": datetime(2000, 1, 1)})


def status_settled(engine: sa.Engine) -> bool:
    query = (
        "SELECT count(*) FROM jobs WHERE name = 'show_status' AND state IN ('queued', 'running')"
    )
    with engine.connect() as connection:
        return connection.execute(sa.text(query)).scalar_one() == 0


def test_a_run_killed_at_every_step_boundary_ends_with_one_of_everything(
    crashable: tuple[Server, GitHubDouble, ModelDouble], engine: sa.Engine
) -> None:
    server, github, models = crashable
    killer = Killer(server, KILLS)
    github.before_replying.append(killer.on_request)
    models.policy = killing(killer, models_for(FOUR_TASKS))
    commit_files(github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    server.start()
    hooks = f"{server.url}/api/github/webhooks"
    label(github, hooks)

    carry_on(
        server,
        killer,
        engine,
        lambda: run_state(engine) == "awaiting_approval" and len(killer.done) == 2,
    )
    say(github, hooks, "/approve-plan")
    carry_on(
        server,
        killer,
        engine,
        lambda: (
            not killer.pending
            and run_state(engine) == "pr_open"
            and unsettled_jobs(engine) == 0
            and status_settled(engine)
        ),
    )

    assert killer.done == [kill.moment for kill in KILLS]
    assert sorted(branch_log(github)) == sorted(f"{key}: Step {key}" for key in FILES)
    assert len(github.pulls(REPOSITORY)) == 1
    assert len(status_comments(github)) == 1
    (check_run,) = github.check_runs(REPOSITORY)
    assert check_run["conclusion"] == "success"
