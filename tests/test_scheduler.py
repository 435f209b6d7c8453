"""The scheduler: dependency order, critical path first, both caps, one writer per file."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.scheduler import (
    DONE_STATES,
    IN_FLIGHT_STATES,
    RUNNING_STATES,
    TaskView,
    blocked_for_good,
    effort_estimate,
    finished,
    key_order,
    ready_to_start,
    remaining_path,
)

ROOMY = {"run_cap": 100, "global_free": 100}


def task(
    key: str,
    state: str = "pending",
    *,
    after: Sequence[str] = (),
    files: Sequence[str] | None = None,
    estimate: float = 1.0,
    needs_approval: bool = False,
) -> TaskView:
    # Each task writes its own file unless a test says otherwise, so files never collide by chance.
    written = (f"src/{key.lower()}.py",) if files is None else tuple(files)
    return TaskView(key, state, tuple(after), written, needs_approval, estimate)


def with_states(tasks: Sequence[TaskView], **states: str) -> list[TaskView]:
    return [replace(t, state=states.get(t.key, t.state)) for t in tasks]


def chain(length: int) -> list[TaskView]:
    return [task("T1")] + [task(f"T{n}", after=[f"T{n - 1}"]) for n in range(2, length + 1)]


def diamond() -> list[TaskView]:
    return [
        task("T1"),
        task("T2", after=["T1"]),
        task("T3", after=["T1"]),
        task("T4", after=["T2", "T3"]),
    ]


# Dependencies


def test_a_chain_starts_one_task_at_a_time_in_order() -> None:
    tasks = chain(3)
    assert ready_to_start(tasks, **ROOMY) == ["T1"]
    assert ready_to_start(with_states(tasks, T1="running"), **ROOMY) == []
    assert ready_to_start(with_states(tasks, T1="integrated"), **ROOMY) == ["T2"]
    assert ready_to_start(with_states(tasks, T1="integrated", T2="integrated"), **ROOMY) == ["T3"]


def test_a_fan_out_starts_every_branch_once_the_root_is_done() -> None:
    tasks = [task("T1"), *(task(f"T{n}", after=["T1"]) for n in range(2, 7))]
    assert ready_to_start(tasks, **ROOMY) == ["T1"]
    assert ready_to_start(with_states(tasks, T1="integrated"), **ROOMY) == [
        "T2",
        "T3",
        "T4",
        "T5",
        "T6",
    ]


def test_a_diamond_joins_only_when_both_sides_are_done() -> None:
    tasks = with_states(diamond(), T1="integrated")
    assert ready_to_start(tasks, **ROOMY) == ["T2", "T3"]
    assert ready_to_start(with_states(tasks, T2="integrated", T3="running"), **ROOMY) == []
    assert ready_to_start(with_states(tasks, T2="integrated", T3="integrated"), **ROOMY) == ["T4"]


def test_a_skipped_dependency_counts_as_done() -> None:
    tasks = with_states(chain(2), T1="skipped")
    assert ready_to_start(tasks, **ROOMY) == ["T2"]


@pytest.mark.parametrize(
    "state",
    ["running", "reviewing", "awaiting_approval", "accepted", "failed", "escalated", "cancelled"],
)
def test_a_dependency_not_on_the_branch_yet_holds_its_dependents(state: str) -> None:
    assert ready_to_start(with_states(chain(2), T1=state), **ROOMY) == []


@pytest.mark.parametrize("state", ["running", "reviewing", "integrated", "failed"])
def test_only_pending_tasks_are_started(state: str) -> None:
    assert ready_to_start([task("T1", state)], **ROOMY) == []


def test_a_task_that_needs_approval_may_still_start() -> None:
    assert ready_to_start([task("T1", needs_approval=True)], **ROOMY) == ["T1"]


# Critical path first


def test_the_longer_remaining_path_starts_first() -> None:
    tasks = [task("T1"), task("T2"), task("T3", after=["T2"]), task("T4", after=["T3"])]
    assert ready_to_start(tasks, run_cap=1, global_free=1) == ["T2"]
    assert ready_to_start(tasks, **ROOMY) == ["T2", "T1"]


def test_estimates_weigh_more_than_the_number_of_tasks() -> None:
    tasks = [task("T1"), task("T2", after=["T1"]), task("T3", estimate=5.0)]
    assert ready_to_start(tasks, run_cap=1, global_free=1) == ["T3"]


@pytest.mark.parametrize(
    ("effort", "estimate"), [(None, 1.0), (1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 4.0)]
)
def test_each_effort_level_is_twice_the_one_below(effort: int | None, estimate: float) -> None:
    assert effort_estimate(effort) == estimate


def test_a_large_task_starts_before_a_chain_of_small_ones() -> None:
    small = [task("T1", estimate=effort_estimate(1))] + [
        task(f"T{n}", after=[f"T{n - 1}"], estimate=effort_estimate(1)) for n in (2, 3)
    ]
    tasks = [*small, task("T4", estimate=effort_estimate(5))]
    assert ready_to_start(tasks, run_cap=1, global_free=1) == ["T4"]


def test_ties_go_in_numeric_key_order() -> None:
    tasks = [task("T10"), task("T2"), task("T1")]
    assert ready_to_start(tasks, **ROOMY) == ["T1", "T2", "T10"]


def test_remaining_path_sums_the_longest_chain_after_each_task() -> None:
    tasks = [
        task("T1", estimate=2.0),
        task("T2", after=["T1"], estimate=3.0),
        task("T3", after=["T1"], estimate=1.0),
        task("T4", after=["T2", "T3"], estimate=0.5),
    ]
    assert remaining_path(tasks) == {"T1": 5.5, "T2": 3.5, "T3": 1.5, "T4": 0.5}


def test_remaining_path_leaves_out_work_that_is_done_or_dropped() -> None:
    tasks = with_states(diamond(), T1="integrated", T2="skipped")
    assert remaining_path(tasks) == {"T1": 2.0, "T2": 1.0, "T3": 2.0, "T4": 1.0}


def test_key_order_reads_numbers_as_numbers() -> None:
    keys = ["T10", "T2", "T1", "T10a", "T9"]
    assert sorted(keys, key=key_order) == ["T1", "T2", "T9", "T10", "T10a"]


# Caps


def test_the_run_cap_counts_the_runs_tasks_already_running() -> None:
    tasks = [task("T1", "running"), task("T2", "reviewing"), task("T3"), task("T4"), task("T5")]
    assert ready_to_start(tasks, run_cap=3, global_free=10) == ["T3"]
    assert ready_to_start(tasks, run_cap=2, global_free=10) == []


def test_tasks_waiting_for_approval_hold_no_slot() -> None:
    tasks = [task("T1", "awaiting_approval", needs_approval=True), task("T2"), task("T3")]
    assert ready_to_start(tasks, run_cap=2, global_free=10) == ["T2", "T3"]


def test_the_global_cap_limits_how_many_start() -> None:
    tasks = [task(f"T{n}") for n in range(1, 6)]
    assert ready_to_start(tasks, run_cap=10, global_free=2) == ["T1", "T2"]


@pytest.mark.parametrize(("run_cap", "global_free"), [(0, 5), (5, 0), (5, -3), (-1, 5)])
def test_no_slot_left_starts_nothing(run_cap: int, global_free: int) -> None:
    assert ready_to_start([task("T1")], run_cap=run_cap, global_free=global_free) == []


# One writer per file


def test_two_ready_tasks_sharing_a_file_never_start_together() -> None:
    tasks = [
        task("T2", files=["src/api.py"]),
        task("T3", files=["src/api.py", "src/db.py"]),
        task("T4"),
    ]
    assert ready_to_start(tasks, **ROOMY) == ["T2", "T4"]


def test_a_task_waiting_for_a_file_does_not_hold_back_the_next() -> None:
    tasks = [
        task("T1", "running", files=["src/api.py"]),
        task("T2", files=["src/api.py"], estimate=9.0),
        task("T3"),
    ]
    assert ready_to_start(tasks, run_cap=2, global_free=2) == ["T3"]


@pytest.mark.parametrize("state", sorted(IN_FLIGHT_STATES))
def test_a_file_stays_taken_until_its_task_is_integrated(state: str) -> None:
    tasks = [task("T1", state, files=["src/api.py"]), task("T2", files=["src/api.py"])]
    assert ready_to_start(tasks, **ROOMY) == []
    assert ready_to_start(with_states(tasks, T1="integrated"), **ROOMY) == ["T2"]


@pytest.mark.parametrize("state", ["failed", "escalated", "cancelled", "skipped"])
def test_a_stopped_task_frees_its_files(state: str) -> None:
    tasks = [task("T1", state, files=["src/api.py"]), task("T2", files=["src/api.py"])]
    assert ready_to_start(tasks, **ROOMY) == ["T2"]


def test_a_task_with_no_files_never_waits_for_one() -> None:
    tasks = [task("T1", "running", files=[]), task("T2", files=[]), task("T3", files=[])]
    assert ready_to_start(tasks, **ROOMY) == ["T2", "T3"]


# Stuck and finished runs


def test_dependents_of_a_failed_task_are_blocked_for_good_through_the_chain() -> None:
    tasks = [*with_states(chain(3), T1="failed"), task("T4")]
    assert blocked_for_good(tasks) == ["T2", "T3"]


@pytest.mark.parametrize("state", ["failed", "escalated", "cancelled"])
def test_each_stopped_state_blocks_its_dependents(state: str) -> None:
    assert blocked_for_good(with_states(diamond(), T1="integrated", T3=state)) == ["T4"]


@pytest.mark.parametrize(
    "state", ["pending", "running", "reviewing", "awaiting_approval", "accepted", "integrated"]
)
def test_a_dependency_that_may_still_finish_blocks_nothing(state: str) -> None:
    assert blocked_for_good(with_states(chain(3), T1=state)) == []


def test_a_missing_dependency_or_a_cycle_blocks_for_good() -> None:
    tasks = [task("T1", after=["T9"]), task("T2", after=["T3"]), task("T3", after=["T2"])]
    assert blocked_for_good(tasks) == ["T1", "T2", "T3"]


def test_blocked_tasks_come_in_key_order() -> None:
    tasks = [task("T1", "failed"), task("T10", after=["T1"]), task("T2", after=["T1"])]
    assert blocked_for_good(tasks) == ["T2", "T10"]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({}, False),
        ({"T1": "integrated", "T2": "integrated", "T3": "skipped"}, True),
        ({"T1": "integrated", "T2": "failed", "T3": "cancelled"}, True),
        ({"T1": "integrated", "T2": "integrated", "T3": "awaiting_approval"}, False),
        ({"T1": "integrated", "T2": "integrated", "T3": "reviewing"}, False),
        ({"T1": "failed"}, False),  # T2 and T3 are blocked, waiting for a person
    ],
    ids=["nothing done", "all done", "done or stopped", "awaiting approval", "in review", "stuck"],
)
def test_finished_means_nothing_pending_or_in_flight(
    states: dict[str, str], expected: bool
) -> None:
    assert finished(with_states(chain(3), **states)) is expected


# Mistakes in the input


def test_a_cycle_is_refused_by_name() -> None:
    tasks = [
        task("T1"),
        task("T2", after=["T3"]),
        task("T3", after=["T2"]),
        task("T4", after=["T3"]),
    ]
    with pytest.raises(ValueError, match="tasks T2, T3, T4 are in a cycle of depends_on or wait"):
        ready_to_start(tasks, **ROOMY)


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="two tasks have the key T1"):
        remaining_path([task("T1"), task("T1")])


@pytest.mark.parametrize("estimate", [-1.0, float("nan"), float("inf")])
def test_an_estimate_must_be_a_finite_non_negative_number(estimate: float) -> None:
    with pytest.raises(ValueError, match="task T1 has estimate"):
        task("T1", estimate=estimate)


# Random graphs, simulated to the end

ANY_STATE = ["pending"] * 4 + ["integrated"] * 3 + sorted(IN_FLIGHT_STATES | {"failed", "skipped"})
FILE_POOL = [f"src/m{number}.py" for number in range(6)]


@st.composite
def random_graphs(draw: st.DrawFn) -> list[TaskView]:
    """Up to 14 tasks; each depends only on earlier ones and writes 0-2 files of a small pool,
    so shared files are common."""
    size = draw(st.integers(1, 14))
    tasks = []
    for number in range(1, size + 1):
        earlier = [f"T{n}" for n in range(1, number)]
        after = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        files = draw(st.lists(st.sampled_from(FILE_POOL), max_size=2, unique=True))
        estimate = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]))
        approval = draw(st.booleans())
        tasks.append(
            task(f"T{number}", after=after, files=files, estimate=estimate, needs_approval=approval)
        )
    return tasks


@dataclass(frozen=True)
class Caps:
    """A run cap, and a global cap of which `others` slots are held by other runs."""

    run_cap: int
    global_cap: int
    others: int

    def global_free(self, tasks: Sequence[TaskView]) -> int:
        return self.global_cap - self.others - sum(t.state in RUNNING_STATES for t in tasks)


caps = st.builds(Caps, st.integers(1, 4), st.integers(2, 6), st.integers(0, 1))


def next_state(view: TaskView, fails: bool) -> str:
    """One step of a started task: running, reviewing, (awaiting approval), then integrated."""
    if view.state == "running":
        return "failed" if fails else "reviewing"
    if view.state == "reviewing" and view.needs_approval:
        return "awaiting_approval"
    return "integrated"


def check_choice(tasks: Sequence[TaskView], started: Sequence[str]) -> None:
    """Each started task was pending with its dependencies done, and named once."""
    by_key = {t.key: t for t in tasks}
    assert len(set(started)) == len(started)
    for key in started:
        assert by_key[key].state == "pending"
        waiting = [d for d in by_key[key].depends_on if by_key[d].state not in DONE_STATES]
        assert not waiting, f"{key} started before {waiting} were done"


def check_limits(tasks: Sequence[TaskView], limits: Caps) -> None:
    """Both caps hold, and no file is in the write sets of two tasks in flight."""
    running = [t for t in tasks if t.state in RUNNING_STATES]
    assert len(running) <= limits.run_cap
    assert len(running) + limits.others <= limits.global_cap
    in_flight = [t for t in tasks if t.state in IN_FLIGHT_STATES]
    written = [path for t in in_flight for path in set(t.files)]
    assert len(written) == len(set(written)), f"two tasks in flight share a file: {in_flight}"


def simulate(
    tasks: list[TaskView], limits: Caps, rng: random.Random, failure_rate: float
) -> list[TaskView]:
    """Start what is ready, move one in-flight task (picked by `rng`) a step on, until nothing
    is in flight."""
    for _ in range(10 * len(tasks) + 10):
        started = ready_to_start(
            tasks, run_cap=limits.run_cap, global_free=limits.global_free(tasks)
        )
        check_choice(tasks, started)
        tasks = with_states(tasks, **dict.fromkeys(started, "running"))
        check_limits(tasks, limits)
        moving = [t for t in tasks if t.state in IN_FLIGHT_STATES]
        if not moving:
            return tasks
        step = moving[rng.randrange(len(moving))]
        tasks = with_states(tasks, **{step.key: next_state(step, rng.random() < failure_rate)})
    raise AssertionError(f"the run did not settle: {tasks}")


@settings(max_examples=300, deadline=None)
@given(random_graphs(), caps, st.randoms(use_true_random=False))
def test_every_task_of_a_random_graph_runs_within_the_caps(
    tasks: list[TaskView], limits: Caps, rng: random.Random
) -> None:
    end = simulate(tasks, limits, rng, failure_rate=0.0)
    assert {t.state for t in end} == {"integrated"}
    assert finished(end)
    assert blocked_for_good(end) == []


@settings(max_examples=300, deadline=None)
@given(random_graphs(), caps, st.randoms(use_true_random=False))
def test_after_failures_what_never_started_is_what_is_blocked_for_good(
    tasks: list[TaskView], limits: Caps, rng: random.Random
) -> None:
    end = simulate(tasks, limits, rng, failure_rate=0.3)
    never_started = sorted((t.key for t in end if t.state == "pending"), key=key_order)
    assert blocked_for_good(end) == never_started
    assert finished(end) == (not never_started)


@settings(max_examples=200, deadline=None)
@given(random_graphs(), caps, st.randoms(use_true_random=False))
def test_the_choice_does_not_depend_on_the_order_tasks_are_listed(
    tasks: list[TaskView], limits: Caps, shuffler: random.Random
) -> None:
    shuffled = list(tasks)
    shuffler.shuffle(shuffled)
    free = limits.global_free(tasks)
    assert ready_to_start(shuffled, run_cap=limits.run_cap, global_free=free) == ready_to_start(
        tasks, run_cap=limits.run_cap, global_free=free
    )


@settings(max_examples=300, deadline=None)
@given(random_graphs(), caps, st.data())
def test_a_ready_task_left_out_waits_for_a_file_or_has_no_higher_priority(
    tasks: list[TaskView], limits: Caps, data: st.DataObject
) -> None:
    # Random states, so some files and slots are taken; consistency is not the point here.
    states = data.draw(
        st.lists(st.sampled_from(ANY_STATE), min_size=len(tasks), max_size=len(tasks))
    )
    tasks = [replace(t, state=state) for t, state in zip(tasks, states, strict=True)]
    free = limits.global_free(tasks)
    started = ready_to_start(tasks, run_cap=limits.run_cap, global_free=free)
    running = sum(t.state in RUNNING_STATES for t in tasks)
    full = len(started) >= min(limits.run_cap - running, free)
    priority = remaining_path(tasks)
    chosen = [t for t in tasks if t.key in started]
    taken = {path for t in tasks if t.state in IN_FLIGHT_STATES for path in t.files}
    taken |= {path for t in chosen for path in t.files}
    for left_out in (t for t in tasks if t.key in ready_keys(tasks) and t.key not in started):
        if taken.isdisjoint(left_out.files):
            assert full, f"{left_out.key} was free to start"
            rank = (-priority[left_out.key], key_order(left_out.key))
            assert all((-priority[t.key], key_order(t.key)) < rank for t in chosen)


def ready_keys(tasks: Sequence[TaskView]) -> set[str]:
    done = {t.key for t in tasks if t.state in DONE_STATES}
    return {t.key for t in tasks if t.state == "pending" and done.issuperset(t.depends_on)}
