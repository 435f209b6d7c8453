"""Which of a run's tasks start next: dependencies first, the critical path first, within caps.

Pure functions over a snapshot of the run's tasks (`TaskView`); the caller reads the snapshot,
starts what `ready_to_start` names and asks again when a task changes state.

- A task is ready when it is pending and every dependency is done (`DONE_STATES`).
- Ready tasks start longest remaining path first (`remaining_path`), ties in key order (T2
  before T10), so the chain that decides when the run ends is never kept waiting.
- At most `run_cap` of the run's tasks run at once and at most `global_free` more start, the
  slots left under `BATON_MAX_PARALLEL` over all runs.
- Two tasks whose write sets share a file are never in flight at once: a ready task that would
  share one waits, and the tasks after it in priority order may start in its place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bot.store.models import TaskState

# A dependency in these states is satisfied: its change is on the run branch, or it was dropped.
# Not `accepted` or `awaiting_approval`: their commit is not on the branch a new task starts from.
DONE_STATES: frozenset[str] = frozenset({TaskState.integrated, TaskState.skipped})
# Tasks that hold a worker slot, counted against `run_cap` (and by the caller in `global_free`).
RUNNING_STATES: frozenset[str] = frozenset({TaskState.running, TaskState.reviewing})
# Started and not yet on the branch: such a task keeps its write set until it is integrated.
IN_FLIGHT_STATES: frozenset[str] = RUNNING_STATES | {
    TaskState.awaiting_approval,
    TaskState.accepted,
}
# Ended without a result; only a person (`/retry`, `/skip`) moves the run past them.
STOPPED_STATES: frozenset[str] = frozenset(
    {TaskState.failed, TaskState.escalated, TaskState.cancelled}
)
_NUMBERS = re.compile(r"([0-9]+)")
# The planner's effort level that counts as one unit of estimate; a task without one counts so.
MEDIUM_EFFORT = 3


@dataclass(frozen=True)
class TaskView:
    """What the scheduler needs to know about one task of a run."""

    key: str  # "T3", unique within the run
    state: str  # a TaskState value
    depends_on: tuple[str, ...]
    files: tuple[str, ...]  # the write set
    # Protected paths: the task waits for /approve-task before integration, but it may run.
    needs_approval: bool = False
    estimate: float = 1.0  # relative expected duration, for the critical path

    def __post_init__(self) -> None:
        if not (math.isfinite(self.estimate) and self.estimate >= 0):
            raise ValueError(
                f"task {self.key} has estimate {self.estimate}; use a finite number >= 0"
            )


def effort_estimate(effort: int | None) -> float:
    """A task's `estimate` from the planner's effort (1..5): each level twice the one below,
    since agent tasks range from minutes to hours; no effort counts as medium, so a plan
    without efforts puts the longest chain by task count first."""
    return 1.0 if effort is None else 2.0 ** (effort - MEDIUM_EFFORT)


def key_order(key: str) -> tuple[str | int, ...]:
    """A sort key that puts numbers in keys in numeric order: T2 before T10, T10 before T10a."""
    # Splitting on a captured group puts text at even places and numbers at odd ones, so text
    # is only ever compared with text.
    return tuple(int(part) if place % 2 else part for place, part in enumerate(_NUMBERS.split(key)))


def remaining_path(tasks: Sequence[TaskView]) -> dict[str, float]:
    """For each task, the longest chain of estimates from it to the end of the graph, itself
    included: how long the run still needs after it starts, however many workers there are.

    A task in `DONE_STATES` adds nothing to a chain (its work is behind the run or dropped);
    dependencies on keys not in `tasks` are ignored here. Raises `ValueError` naming the tasks
    when the dependencies form a cycle, or when two tasks share a key.
    """
    by_key = _by_key(tasks)
    dependents = _dependents(tasks, by_key)
    remaining: dict[str, float] = {}
    # Dependents come later in topological order, so each is known before the tasks it needs.
    for key in reversed(_topological_order(tasks, by_key, dependents)):
        task = by_key[key]
        own = 0.0 if task.state in DONE_STATES else task.estimate
        remaining[key] = own + max((remaining[after] for after in dependents[key]), default=0.0)
    return remaining


def ready_to_start(tasks: Sequence[TaskView], *, run_cap: int, global_free: int) -> list[str]:
    """The keys of the tasks to start now, in the order to start them.

    Every task named is pending with all its dependencies in `DONE_STATES`; together with the
    run's tasks in `RUNNING_STATES` they are at most `run_cap`, and they are at most
    `global_free`. No file is in the write sets of two of them, nor of one of them and a task in
    `IN_FLIGHT_STATES`. Among the ready tasks the longest `remaining_path` goes first, ties in
    `key_order`; a task that must wait for a file does not stop the ones after it. Raises
    `ValueError` as `remaining_path` does.
    """
    running = sum(task.state in RUNNING_STATES for task in tasks)
    slots = min(run_cap - running, global_free)
    if slots <= 0:
        return []
    priority = remaining_path(tasks)
    candidates = sorted(_ready(tasks), key=lambda task: (-priority[task.key], key_order(task.key)))
    busy = _files_in_flight(tasks)
    chosen: list[str] = []
    for task in candidates:
        if len(chosen) == slots:
            break
        if busy.isdisjoint(task.files):
            chosen.append(task.key)
            busy.update(task.files)
    return chosen


def blocked_for_good(tasks: Sequence[TaskView]) -> list[str]:
    """The keys, in `key_order`, of pending tasks that can never start as things stand: a
    dependency, directly or through other pending tasks, is in `STOPPED_STATES`, is not among
    `tasks`, or waits in a cycle. A person's `/retry` or `/skip` of that dependency frees them.
    """
    reachable = _could_be_done(tasks)
    blocked = [
        task.key for task in tasks if task.state == TaskState.pending and task.key not in reachable
    ]
    return sorted(blocked, key=key_order)


def all_in(tasks: Sequence[TaskView]) -> bool:
    """Whether every task is on the branch or dropped: the run can propose its change."""
    return all(task.state in DONE_STATES for task in tasks)


def finished(tasks: Sequence[TaskView]) -> bool:
    """Whether no task is pending or in flight (`IN_FLIGHT_STATES`): every task is done or
    stopped. A run whose pending tasks are all `blocked_for_good` is not finished; it waits
    for a person."""
    return not any(
        task.state == TaskState.pending or task.state in IN_FLIGHT_STATES for task in tasks
    )


def _by_key(tasks: Sequence[TaskView]) -> dict[str, TaskView]:
    by_key: dict[str, TaskView] = {}
    for task in tasks:
        if task.key in by_key:
            raise ValueError(f"two tasks have the key {task.key}; keys must be unique in a run")
        by_key[task.key] = task
    return by_key


def _dependents(tasks: Sequence[TaskView], by_key: Mapping[str, TaskView]) -> dict[str, set[str]]:
    """For each task, the tasks that name it in depends_on."""
    dependents: dict[str, set[str]] = {task.key: set() for task in tasks}
    for task in tasks:
        for dependency in task.depends_on:
            if dependency in by_key:
                dependents[dependency].add(task.key)
    return dependents


def _topological_order(
    tasks: Sequence[TaskView],
    by_key: Mapping[str, TaskView],
    dependents: Mapping[str, Iterable[str]],
) -> list[str]:
    """Every key after the keys it depends on; `ValueError` when depends_on has a cycle."""
    waiting_for = {task.key: set(task.depends_on) & by_key.keys() for task in tasks}
    free = [key for key, dependencies in waiting_for.items() if not dependencies]
    order: list[str] = []
    while free:
        key = free.pop()
        order.append(key)
        for after in dependents[key]:
            waiting_for[after].discard(key)
            if not waiting_for[after]:
                free.append(after)
    if len(order) < len(tasks):
        stuck = sorted(waiting_for.keys() - set(order), key=key_order)
        raise ValueError(
            f"tasks {', '.join(stuck)} are in a cycle of depends_on or wait for one; "
            "a checked plan has no cycle, so the plan must be corrected"
        )
    return order


def _ready(tasks: Sequence[TaskView]) -> list[TaskView]:
    done = {task.key for task in tasks if task.state in DONE_STATES}
    return [
        task
        for task in tasks
        if task.state == TaskState.pending and done.issuperset(task.depends_on)
    ]


def _files_in_flight(tasks: Iterable[TaskView]) -> set[str]:
    return {path for task in tasks if task.state in IN_FLIGHT_STATES for path in task.files}


def _could_be_done(tasks: Sequence[TaskView]) -> set[str]:
    """Keys of tasks done, in flight, or pending with every dependency among these (a least
    fixed point, so tasks waiting in a cycle stay out)."""
    hopeful = {
        task.key for task in tasks if task.state in DONE_STATES or task.state in IN_FLIGHT_STATES
    }
    pending = [task for task in tasks if task.state == TaskState.pending]
    grew = True
    while grew:
        newly = {
            task.key
            for task in pending
            if task.key not in hopeful and hopeful.issuperset(task.depends_on)
        }
        hopeful |= newly
        grew = bool(newly)
    return hopeful
