"""Scheduling quality: how close Baton's scheduler comes to the fastest possible run.

Synthetic task graphs with scripted worker durations are run in virtual time through
`bot.scheduler.ready_to_start`, event by event: start what is ready, advance the clock to the
next completion, mark that task integrated, repeat. Nothing sleeps, so the numbers do not depend
on the machine, and every run is checked: no cap exceeded, no two running tasks sharing a file,
no task started before its dependencies, every task finished. One cap serves as both the run's
`max_parallel` and the global `BATON_MAX_PARALLEL`.

The scheduler never sees the durations. It sees what Baton gives it: each task's `effort`
(1..5) from the plan, turned into an estimate by `bot.scheduler.effort_estimate`. The planner's
efforts are scripted too: the level that matches the task's duration (3 for about 10 minutes, one
level per doubling), off by a random amount (normal, sigma `--planner-noise` levels, 0.5 unless
told) and rounded, so about a third of the tasks are sized one level wrong, as a planner guessing
would; `--planner-noise 0` is a planner that is only ever off by rounding.

Per graph and cap: the makespan; the issue's lower bound max(critical path, total work / cap),
which no schedule can beat; their ratio; the serial time of one agent doing every task in turn
and the speed-up over it. More columns say how to read a ratio:

- tight: a higher lower bound (`Graph.tight_bound`). The issue's bound assumes every worker can
  be busy from the first minute; on a fan-out the root runs alone, so even the best schedule
  exceeds that bound. A ratio to `tight` near 1 means the schedule is near the best possible,
  and a row whose tight bound is itself over 1.10 x bound (marked `!`) is one where no schedule
  at all can meet the goal.
- exact: the makespan had the scheduler known every true duration (an oracle no planner is).
- no-effort: the makespan of a plan without efforts, where every estimate is 1.0 and the
  critical path is the longest chain by task count.

Graphs (each seeded; every task writes its own file unless said otherwise):

- chain: T1 -> T2 -> ... -> Tn.
- fan-out: T1, then T2..Tn each depending on T1 only, at each size.
- diamonds: diamonds of width 3 in a row: a task, three tasks after it, one task after those
  three that starts the next diamond.
- layered: layers of 1-6 tasks; each task depends on 1-3 tasks of the layer before, and with
  probability 0.2 on one more from any earlier layer.
- random: each task depends on 0-3 tasks (uniform) drawn from all earlier tasks.
- local: each task depends on 0-3 tasks drawn from the 8 tasks just before it, so chains are
  long and the graph is narrow in places.
- shared files (their own table): random graphs in which each task writes 1-2 files from a pool
  of n/4, a stress test, since a checked plan warns about every such pair that could run at
  once. Tasks writing one file run one at a time, so there the bound also takes the busiest
  file (the most work that writes one file); it knows nothing else about files.

Worker durations are minutes drawn from a lognormal distribution (median 10, sigma 0.6),
clipped to 2..60 and rounded to half minutes: most agent tasks short, a few long.

With `--model-double`, a few small graphs are also run with one worker per started task: an
agent loop (`bot.llm.agent.Agent`) calling the Anthropic SDK against the model double of the
tests on loopback, which answers `finish` at once. Durations stay virtual; the run checks that
each worker's answer reaches its own task, one model call per task, no more calls in flight than
the cap, and the same makespan as the pure simulation.

Run from the repository root:

    .venv/bin/python benchmarks/scheduler.py
    .venv/bin/python benchmarks/scheduler.py --caps 2,4,8 --seeds 5 --model-double

Exit status: 0 after a complete run whether or not the goal holds; 1 when a simulated run broke
a rule (a cap, a shared file, a dependency), left a task undone, or beat a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import Literal

import anthropic

from bot.llm.agent import Agent, Finisher
from bot.llm.anthropic_adapter import AnthropicModel
from bot.llm.types import Model, Turn, TurnRequest
from bot.plan.schema import MAX_EFFORT, MIN_EFFORT
from bot.scheduler import MEDIUM_EFFORT, TaskView, effort_estimate, ready_to_start, remaining_path
from bot.workers.roles import FinishInput

GOAL_RATIO = 1.10
SIZES = (20, 50, 100, 200)
STRUCTURED_SIZE = 20
DIAMOND_WIDTH = 3
MAX_LAYER_WIDTH = 6
LONG_EDGE_CHANCE = 0.2
MAX_DEPENDENCIES = 3
LOCAL_WINDOW = 8
MEDIAN_MINUTES = 10.0
SIGMA = 0.6
MIN_MINUTES, MAX_MINUTES = 2.0, 60.0
PLANNER_NOISE = 0.5  # how far off the planner's effort is, in levels (one level = 2x duration)
REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_SYSTEM = "You are a worker. Do the task, then call finish."
FINISH = Finisher("finish", "Say the task is done.", FinishInput)


Estimates = Literal["effort", "exact", "none"]  # what the scheduler is told of durations


@dataclass(frozen=True)
class Spec:
    """One task of a synthetic graph, how long its worker takes in virtual minutes, and the
    effort the planner gave it."""

    key: str
    depends_on: tuple[str, ...]
    files: tuple[str, ...]
    minutes: float
    effort: int

    def estimate(self, estimates: Estimates) -> float:
        if estimates == "exact":
            return self.minutes
        return effort_estimate(self.effort if estimates == "effort" else None)


@dataclass(frozen=True)
class Graph:
    name: str
    tasks: tuple[Spec, ...]

    @cached_property
    def work(self) -> float:
        return sum(task.minutes for task in self.tasks)

    @cached_property
    def critical_path(self) -> float:
        return max(remaining_path(self.views("exact")).values())

    @cached_property
    def busiest_file(self) -> float:
        """The most work that writes one file; those tasks can only run one after another."""
        per_file: dict[str, float] = {}
        for task in self.tasks:
            for path in task.files:
                per_file[path] = per_file.get(path, 0.0) + task.minutes
        return max(per_file.values(), default=0.0)

    def lower_bound(self, cap: int) -> float:
        """The issue's bound, max(critical path, work / cap), and the busiest file."""
        return max(self.critical_path, self.work / cap, self.busiest_file)

    def tight_bound(self, cap: int) -> float:
        """A bound at least as high as `lower_bound`: tasks that cannot start before `h` and
        are followed by a chain of at least `q` all run between h and makespan - q, so
        makespan >= h + q + (their work) / cap, for every pair of thresholds h and q."""
        heads, tails = self.heads_and_tails()
        best = self.lower_bound(cap)
        for q in set(tails.values()):
            window = sorted((heads[t.key], t.minutes) for t in self.tasks if tails[t.key] >= q)
            work = 0.0
            # Latest head first, so `work` sums the tasks whose head is at least `h`.
            for h, minutes in reversed(window):
                work += minutes
                best = max(best, h + q + work / cap)
        return best

    def heads_and_tails(self) -> tuple[dict[str, float], dict[str, float]]:
        """For each task, the longest chain of work before it and after it, itself excluded."""
        remaining = remaining_path(self.views("exact"))
        tails = {task.key: remaining[task.key] - task.minutes for task in self.tasks}
        heads: dict[str, float] = {}
        by_key = {task.key: task for task in self.tasks}
        # T1..Tn is a topological order: every generator draws dependencies among earlier tasks.
        for task in self.tasks:
            heads[task.key] = max(
                (heads[dep] + by_key[dep].minutes for dep in task.depends_on), default=0.0
            )
        return heads, tails

    def views(self, estimates: Estimates, states: dict[str, str] | None = None) -> list[TaskView]:
        states = states or {}
        return [
            TaskView(
                task.key,
                states.get(task.key, "pending"),
                task.depends_on,
                task.files,
                estimate=task.estimate(estimates),
            )
            for task in self.tasks
        ]


# ---------------------------------------------------------------------------------------------
# Graphs

Dependencies = Callable[[int, random.Random], list[int]]


def minutes(rng: random.Random) -> float:
    drawn = rng.lognormvariate(math.log(MEDIAN_MINUTES), SIGMA)
    return round(min(max(drawn, MIN_MINUTES), MAX_MINUTES) * 2) / 2


def planned(graph: Graph, noise: float) -> Graph:
    """`graph` with the planner's efforts: for each task the level for its duration (one per
    doubling, MEDIUM_EFFORT at the median), off by normal noise of sigma `noise`, rounded into
    1..5. Seeded by the graph's name, so every run of the benchmark sees the same guesses."""
    guesses = random.Random(f"{graph.name}-efforts")

    def effort(minutes: float) -> int:
        level = MEDIUM_EFFORT + math.log2(minutes / MEDIAN_MINUTES) + guesses.gauss(0, noise)
        return min(MAX_EFFORT, max(MIN_EFFORT, round(level)))

    tasks = tuple(replace(task, effort=effort(task.minutes)) for task in graph.tasks)
    return Graph(graph.name, tasks)


def build(
    name: str, size: int, rng: random.Random, dependencies: Dependencies, file_pool: int = 0
) -> Graph:
    """Tasks T1..Tsize; `dependencies(i, rng)` gives the 0-based earlier tasks task i needs.
    With `file_pool`, each task writes 1-2 files of that many instead of a file of its own.
    Every effort is medium until `planned` gives the planner's."""
    tasks = []
    for index in range(size):
        after = tuple(f"T{dep + 1}" for dep in sorted(set(dependencies(index, rng))))
        if file_pool:
            count = min(rng.randint(1, 2), file_pool)
            files = tuple(f"src/f{n}.py" for n in rng.sample(range(file_pool), count))
        else:
            files = (f"src/t{index + 1}.py",)
        tasks.append(Spec(f"T{index + 1}", after, files, minutes(rng), MEDIUM_EFFORT))
    return Graph(name, tuple(tasks))


def chain_dependencies(index: int, rng: random.Random) -> list[int]:
    return [index - 1] if index else []


def fan_out_dependencies(index: int, rng: random.Random) -> list[int]:
    return [0] if index else []


def diamond_dependencies(index: int, rng: random.Random) -> list[int]:
    # Each diamond takes width + 1 positions: its middle tasks, then the join that opens the next.
    if index == 0:
        return []
    place = (index - 1) % (DIAMOND_WIDTH + 1)
    opener = index - 1 - place
    if place < DIAMOND_WIDTH:
        return [opener]
    return list(range(opener + 1, index))


def random_dependencies(index: int, rng: random.Random) -> list[int]:
    return rng.sample(range(index), min(index, rng.randint(0, MAX_DEPENDENCIES)))


def local_dependencies(index: int, rng: random.Random) -> list[int]:
    window = range(max(0, index - LOCAL_WINDOW), index)
    return rng.sample(window, min(len(window), rng.randint(0, MAX_DEPENDENCIES)))


def layered(size: int, rng: random.Random) -> Dependencies:
    """Dependencies for `size` tasks in layers of 1..MAX_LAYER_WIDTH, drawn up front."""
    layers: list[range] = []
    start = 0
    while start < size:
        width = min(rng.randint(1, MAX_LAYER_WIDTH), size - start)
        layers.append(range(start, start + width))
        start += width
    layer_of = {index: number for number, layer in enumerate(layers) for index in layer}

    def dependencies(index: int, rng: random.Random) -> list[int]:
        number = layer_of[index]
        if number == 0:
            return []
        before = layers[number - 1]
        chosen = rng.sample(before, min(len(before), rng.randint(1, MAX_DEPENDENCIES)))
        if number > 1 and rng.random() < LONG_EDGE_CHANCE:
            chosen.append(rng.randrange(layers[number - 1].start))
        return chosen

    return dependencies


def graphs(seeds: int) -> Iterator[Graph]:
    """The structured graphs, then each random family at each size and seed."""
    rng = random.Random(0)
    yield build(f"chain-{STRUCTURED_SIZE}", STRUCTURED_SIZE, rng, chain_dependencies)
    yield build(f"fan-out-{STRUCTURED_SIZE}", STRUCTURED_SIZE, rng, fan_out_dependencies)
    yield build(f"diamonds-{STRUCTURED_SIZE + 1}", STRUCTURED_SIZE + 1, rng, diamond_dependencies)
    # A fan-out at every larger size: how close a schedule can come depends on leaves per worker.
    for size in SIZES[1:]:
        yield build(f"fan-out-{size}", size, random.Random(f"fan-out-{size}"), fan_out_dependencies)
    for size in SIZES:
        for seed in range(1, seeds + 1):
            rng = random.Random(f"layered-{size}-{seed}")
            yield build(f"layered-{size}/s{seed}", size, rng, layered(size, rng))
            rng = random.Random(f"random-{size}-{seed}")
            yield build(f"random-{size}/s{seed}", size, rng, random_dependencies)
            rng = random.Random(f"local-{size}-{seed}")
            yield build(f"local-{size}/s{seed}", size, rng, local_dependencies)


def shared_file_graphs(seeds: int) -> Iterator[Graph]:
    for size in SIZES:
        for seed in range(1, seeds + 1):
            rng = random.Random(f"shared-{size}-{seed}")
            pool = max(2, size // 4)
            yield build(f"shared-{size}/s{seed}", size, rng, random_dependencies, file_pool=pool)


# ---------------------------------------------------------------------------------------------
# Simulation


class RuleBroken(Exception):
    """A simulated run did something the scheduler promises never to do."""


class VirtualRun:
    """One run of a graph in virtual time: `start` what `ready` names, `advance` the clock to
    the next completion, until `advance` says nothing is running; then `finish`."""

    def __init__(self, graph: Graph, cap: int, estimates: Estimates) -> None:
        self.graph = graph
        self.cap = cap  # the run's max_parallel and the global cap alike
        self.estimates = estimates
        self.specs = {task.key: task for task in graph.tasks}
        self.states = dict.fromkeys(self.specs, "pending")
        self.completions: list[tuple[float, str]] = []
        self.now = 0.0

    def ready(self) -> list[str]:
        views = self.graph.views(self.estimates, self.states)
        return ready_to_start(views, run_cap=self.cap, global_free=self.cap - self.running)

    @property
    def running(self) -> int:
        return len(self.completions)

    def start(self, keys: Sequence[str]) -> None:
        for key in keys:
            spec = self.specs[key]
            waiting = [dep for dep in spec.depends_on if self.states[dep] != "integrated"]
            if self.states[key] != "pending" or waiting:
                raise RuleBroken(f"{key} started while {self.states[key]}, before {waiting}")
            self.states[key] = "running"
            heapq.heappush(self.completions, (self.now + spec.minutes, key))
        if self.running > self.cap:
            raise RuleBroken(f"{self.running} tasks running over a cap of {self.cap}")
        written = [path for _, key in self.completions for path in self.specs[key].files]
        if len(written) != len(set(written)):
            raise RuleBroken(f"running tasks {sorted(self.completions)} share a file")

    def advance(self) -> bool:
        """Integrate the tasks that finish next; False when none was running."""
        if not self.completions:
            return False
        self.now = self.completions[0][0]
        while self.completions and self.completions[0][0] == self.now:
            self.states[heapq.heappop(self.completions)[1]] = "integrated"
        return True

    def finish(self) -> float:
        """The makespan; `RuleBroken` if some task never ran."""
        left = sorted(key for key, state in self.states.items() if state != "integrated")
        if left:
            raise RuleBroken(f"{self.graph.name}: {', '.join(left)} never ran")
        return self.now


def makespan(graph: Graph, cap: int, estimates: Estimates = "effort") -> float:
    """Virtual minutes until every task is integrated; `RuleBroken` if a rule was broken."""
    run = VirtualRun(graph, cap, estimates)
    run.start(run.ready())
    while run.advance():
        run.start(run.ready())
    return run.finish()


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class Row:
    graph: Graph
    cap: int
    makespan: float  # what Baton does: estimates from the planner's efforts
    exact_makespan: float  # estimates are the true durations
    no_effort_makespan: float  # every estimate 1.0
    bound: float
    tight_bound: float

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound

    @property
    def tight_ratio(self) -> float:
        return self.makespan / self.tight_bound

    @property
    def exact_ratio(self) -> float:
        return self.exact_makespan / self.bound

    @property
    def no_effort_ratio(self) -> float:
        return self.no_effort_makespan / self.bound

    @property
    def unattainable(self) -> bool:
        """No schedule at all comes within the goal of the issue's bound here."""
        return self.tight_bound > GOAL_RATIO * self.bound

    @property
    def speed_up(self) -> float:
        return self.graph.work / self.makespan


HEADER = (
    f"{'graph':<16} {'tasks':>5} {'cap':>3} {'makespan':>9} {'crit path':>9} {'work/cap':>9}"
    f" {'bound':>7} {'ratio':>6} {'serial':>7} {'speed-up':>8} {'tight':>7} {'ratio':>6}"
    f" {'exact':>7} {'ratio':>6} {'no-effort':>9} {'ratio':>6}"
)


def measure(graph: Graph, cap: int) -> Row:
    row = Row(
        graph,
        cap,
        makespan(graph, cap, "effort"),
        makespan(graph, cap, "exact"),
        makespan(graph, cap, "none"),
        graph.lower_bound(cap),
        graph.tight_bound(cap),
    )
    # A bound above a schedule that was actually run would be a wrong bound.
    if min(row.makespan, row.exact_makespan, row.no_effort_makespan) < row.tight_bound - 1e-9:
        raise RuleBroken(f"{graph.name} cap {cap}: a schedule beat the bound; the bound is wrong")
    return row


def print_row(row: Row) -> None:
    graph = row.graph
    flag = (" *" if row.ratio > GOAL_RATIO else "") + (" !" if row.unattainable else "")
    print(
        f"{graph.name:<16} {len(graph.tasks):>5} {row.cap:>3} {row.makespan:>9.1f}"
        f" {graph.critical_path:>9.1f} {graph.work / row.cap:>9.1f} {row.bound:>7.1f}"
        f" {row.ratio:>6.3f} {graph.work:>7.1f} {row.speed_up:>7.2f}x"
        f" {row.tight_bound:>7.1f} {row.tight_ratio:>6.3f}"
        f" {row.exact_makespan:>7.1f} {row.exact_ratio:>6.3f}"
        f" {row.no_effort_makespan:>9.1f} {row.no_effort_ratio:>6.3f}{flag}",
        flush=True,
    )


def print_table(title: str, rows_in: Iterator[Graph], caps: Sequence[int]) -> list[Row]:
    print(f"\n{title}\n{HEADER}")
    rows = []
    for graph in rows_in:
        for cap in caps:
            row = measure(graph, cap)
            print_row(row)
            rows.append(row)
    return rows


to_bound = attrgetter("ratio")
to_tight_bound = attrgetter("tight_ratio")
exact_to_bound = attrgetter("exact_ratio")
no_effort_to_bound = attrgetter("no_effort_ratio")


def print_summary(label: str, rows: Sequence[Row]) -> None:
    measures = [
        ("makespan / bound", to_bound),
        ("makespan / tight bound", to_tight_bound),
        ("exact-duration makespan / bound", exact_to_bound),
        ("no-effort makespan / bound", no_effort_to_bound),
    ]
    for name, ratio in measures:
        worst = max(rows, key=ratio)
        over = [row for row in rows if ratio(row) > GOAL_RATIO]
        listed = ", ".join(f"{row.graph.name} cap {row.cap} ({ratio(row):.3f})" for row in over)
        print(
            f"{label}, {name}: worst {ratio(worst):.3f} ({worst.graph.name}, cap {worst.cap});"
            f" {len(over)} of {len(rows)} over {GOAL_RATIO:.2f}{': ' + listed if over else ''}"
        )
    speed_ups = sorted(row.speed_up for row in rows)
    print(
        f"{label}, speed-up over one agent doing every task in turn: {speed_ups[0]:.2f}x to"
        f" {speed_ups[-1]:.2f}x, median {speed_ups[len(speed_ups) // 2]:.2f}x"
    )


# ---------------------------------------------------------------------------------------------
# Through the model double (optional, --model-double)


class CountingModel:
    """A model that counts its calls and the most in flight at once."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0

    @property
    def name(self) -> str:
        return self.model.name

    async def turn(self, request: TurnRequest) -> Turn:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.model.turn(request)
        finally:
            self.in_flight -= 1


async def work(model: Model, key: str) -> str:
    """One worker: an agent loop that ends with `finish`; returns its summary."""
    finished = await Agent(model, WORKER_SYSTEM, tools=[], finishers=[FINISH]).run(f"Task {key}")
    return finished.value.summary if isinstance(finished.value, FinishInput) else ""


async def run_through_double(graph: Graph, cap: int, url: str) -> tuple[float, CountingModel]:
    async with anthropic.AsyncAnthropic(base_url=url, api_key="double", max_retries=0) as client:
        model = CountingModel(AnthropicModel("double", client))
        return await makespan_through(graph, cap, model), model


async def makespan_through(graph: Graph, cap: int, model: Model) -> float:
    """As `makespan`, but the tasks `ready` names first run their workers against `model`, all
    at once; a worker whose summary names another task breaks a rule."""
    run = VirtualRun(graph, cap, "effort")
    while True:
        keys = run.ready()
        summaries = await asyncio.gather(*(work(model, key) for key in keys))
        wrong = [
            (key, text) for key, text in zip(keys, summaries, strict=True) if text != f"done {key}"
        ]
        if wrong:
            raise RuleBroken(f"workers finished with answers meant for others: {wrong}")
        run.start(keys)
        if not run.advance():
            return run.finish()


def double_graphs(noise: float) -> list[Graph]:
    layered_rng = random.Random("double-layered")
    graphs = [
        build("diamonds-9", 9, random.Random("double-diamonds"), diamond_dependencies),
        build("layered-20", 20, layered_rng, layered(20, layered_rng)),
        build("random-20", 20, random.Random("double-random"), random_dependencies),
    ]
    return [planned(graph, noise) for graph in graphs]


def through_model_double(cap: int, noise: float) -> None:
    """Run `double_graphs` with real Anthropic SDK calls to the loopback model double."""
    # The double lives with the tests, which are not installed; the repository root holds them.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.doubles.models import ModelDouble, ModelReply, RecordedCall, ScriptedToolCall

    def answer(call: RecordedCall) -> ModelReply:
        key = call.json["messages"][0]["content"][-1]["text"].removeprefix("Task ")
        finish = {"summary": f"done {key}", "confidence": 0.9}
        return ModelReply(tool_calls=(ScriptedToolCall("finish", finish),))

    print(f"\nThrough the model double (Anthropic SDK on loopback), cap {cap}:")
    print(
        f"{'graph':<12} {'tasks':>5} {'makespan':>9} {'simulated':>9} {'calls':>5}"
        f" {'most at once':>12} {'wall s':>7}"
    )
    with ModelDouble(policy=answer) as double:
        for graph in double_graphs(noise):
            started = time.perf_counter()
            span, model = asyncio.run(run_through_double(graph, cap, double.url))
            wall = time.perf_counter() - started
            expected = makespan(graph, cap)
            print(
                f"{graph.name:<12} {len(graph.tasks):>5} {span:>9.1f} {expected:>9.1f}"
                f" {model.calls:>5} {model.most_in_flight:>12} {wall:>7.2f}",
                flush=True,
            )
            if span != expected or model.calls != len(graph.tasks) or model.most_in_flight > cap:
                raise RuleBroken(f"{graph.name} ran differently through the model double")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Scheduler makespan on synthetic task graphs.")
    parser.add_argument(
        "--caps", type=caps, default=[4, 8], help="comma-separated caps (default 4,8)"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="random graphs per family and size (default 3)"
    )
    parser.add_argument(
        "--model-double",
        action="store_true",
        help="also run a few small graphs with one worker agent per task against the model"
        " double (real SDK calls on loopback; durations stay virtual)",
    )
    parser.add_argument(
        "--planner-noise",
        type=float,
        default=PLANNER_NOISE,
        help=f"sigma, in effort levels, of the planner's error (default {PLANNER_NOISE})",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= 50:
        parser.error("--seeds must be in 1..50")
    if not 0 <= args.planner_noise <= 5:
        parser.error("--planner-noise must be in 0..5")
    return args


def caps(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not levels or any(not 1 <= level <= 64 for level in levels):
        raise argparse.ArgumentTypeError("caps must be integers in 1..64")
    return levels


def print_preamble(noise: float) -> None:
    print(
        "Scheduler makespan in virtual minutes; the scheduler sees the planner's efforts"
        f" (scripted: right level +- normal noise, sigma {noise} levels), as in Baton."
        " bound = max(critical path, work / cap), the issue's bound; ratio = makespan / bound;"
        " serial = one agent doing every task in turn; speed-up = serial / makespan;"
        " tight = a higher lower bound (see Graph.tight_bound), then makespan / tight;"
        " exact = makespan had the scheduler known the true durations; no-effort = makespan of"
        " a plan without efforts; each then its ratio to bound."
        f" * marks a makespan over {GOAL_RATIO:.2f} x bound; ! a row where even the tight bound"
        f" is over {GOAL_RATIO:.2f} x bound, so no schedule can meet the goal."
    )


def print_goal(rows: Sequence[Row], noise: float) -> None:
    goals = [
        ("bound", f"planner's efforts, noise sigma {noise}", to_bound),
        ("tight bound", f"planner's efforts, noise sigma {noise}", to_tight_bound),
        ("bound", "a plan without efforts", no_effort_to_bound),
    ]
    for name, estimates, ratio in goals:
        over = [row for row in rows if ratio(row) > GOAL_RATIO]
        # Only the bound can be out of any schedule's reach; the tight one never is.
        unreachable = sum(row.unattainable for row in over) if name == "bound" else 0
        verdict = "HOLDS" if not over else f"DOES NOT HOLD ({len(over)} of {len(rows)} over"
        verdict += (
            f"; no schedule can meet it on {unreachable})" if unreachable else ")" * bool(over)
        )
        print(
            f"Goal, makespan <= {GOAL_RATIO:.2f} x {name} on every graph ({estimates}): {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    noise = args.planner_noise
    print_preamble(noise)
    try:
        rows = print_table(
            "Graphs:", (planned(graph, noise) for graph in graphs(args.seeds)), args.caps
        )
        shared = print_table(
            "Shared files (bound also >= the busiest file's work):",
            (planned(graph, noise) for graph in shared_file_graphs(args.seeds)),
            args.caps,
        )
        print()
        print_summary("Graphs", rows)
        print_summary("Shared files", shared)
        print_goal(rows, noise)
        print(f"({time.perf_counter() - started:.1f} s of real time)")
        if args.model_double:
            through_model_double(min(args.caps), noise)
    except RuleBroken as broken:
        print(f"FAILED: {broken}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
