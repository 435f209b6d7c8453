"""Whether a plan can be used on a repository: errors that stop it, warnings worth saying, gates.

Every message names the task and the path or id at fault and says what to do, so it can go back
to the planner for repair or to a person as it is. Text from the plan is clipped before it is
repeated, so a huge value never makes a huge message.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, NamedTuple, get_args

import yaml
from pydantic import ValidationError

from bot.plan.schema import Plan, PlanTask, Role

TASK_ID = re.compile(r"T[1-9][0-9]*")
ROLES: tuple[str, ...] = get_args(Role)
SHOWN_CHARS = 80  # the most of one plan-supplied value a message repeats
MAX_SYNTAX_PROBLEMS = 20  # a badly broken plan gets the first problems, not hundreds
_WHOLE_PLAN = -1  # the position of findings about the plan rather than one task


@dataclass(frozen=True)
class PlanRules:
    """Limits from the repository's config: task count and the globs that need a person's gate.

    A glob matches whole posix paths: `*` and `?` stay within one folder, `**` spans any number
    of folders (`migrations/**`), a trailing `/` means everything under that folder, and a glob
    without a `/` matches a file name at any depth (`*.lock`), as in `.gitignore`. Every other
    character, `[` included, matches itself.
    """

    max_tasks: int = 8
    protected_paths: tuple[str, ...] = ()


class PlanCheck(NamedTuple):
    """The verdict on a plan; messages come in task order, then rule order."""

    errors: tuple[str, ...]  # the plan cannot be used; back to the planner, or to a person
    warnings: tuple[str, ...]  # usable, but worth saying
    gated: frozenset[str]  # ids of tasks that write protected paths: they need /approve-task


class PlanSyntaxError(ValueError):
    """Text that is not a plan; `problems` holds one line per problem, ready to show a person."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def check_plan(plan: Plan, files: Collection[str], rules: PlanRules) -> PlanCheck:
    """Check `plan` against `rules` and `files`, every path the repository tracks at the base
    commit (posix, relative to the root). The same inputs always give the same messages."""
    repository = _Repository.of(files)
    graph = _Graph(plan.tasks)
    errors = _in_task_order(
        _count_problems(plan, rules),
        _id_problems(plan.tasks),
        _role_problems(plan.tasks),
        _dependency_problems(graph),
        _cycle_problems(graph),
        _write_set_problems(plan.tasks, repository),
        _context_problems(graph, repository),
    )
    gated = _gated_writes(plan.tasks, rules.protected_paths)
    warnings = _in_task_order(_shared_write_warnings(graph), _gate_warnings(plan.tasks, gated))
    return PlanCheck(errors, warnings, frozenset(plan.tasks[index].id for index in gated))


def protected(path: str, globs: Iterable[str]) -> bool:
    """Whether `path` matches one of `globs`, read as `PlanRules.protected_paths` describes."""
    return any(_glob_pattern(glob).fullmatch(path) for glob in globs)


def writes_protected(task: PlanTask, globs: Iterable[str]) -> bool:
    """Whether the task's write set touches a protected path: it waits for /approve-task."""
    return any(protected(path, globs) for path in task.files)


def parse_plan_yaml(text: str) -> Plan:
    """The plan written as YAML in `text` (an `/edit-plan` comment's block).

    Raises `PlanSyntaxError` naming each problem: a YAML error with its line and column, a
    document that is not a mapping, or each schema error as `tasks[1].role: <what is wrong>`.
    """
    data = _load_yaml(text)
    if not isinstance(data, dict):
        raise PlanSyntaxError(
            [f"the plan must be a YAML mapping with summary and tasks, not {_kind(data)}"]
        )
    try:
        return Plan.model_validate(data)
    except ValidationError as error:
        raise PlanSyntaxError(_schema_problems(error)) from None


class _Finding(NamedTuple):
    position: int  # index of the task it is about, or _WHOLE_PLAN
    message: str


def _in_task_order(*rules: Iterable[_Finding]) -> tuple[str, ...]:
    findings = [finding for rule in rules for finding in rule]
    # A stable sort keeps rule order among the findings about one task.
    return tuple(finding.message for finding in sorted(findings, key=lambda f: f.position))


class _Repository(NamedTuple):
    files: frozenset[str]
    folders: frozenset[str]  # every folder holding a tracked file, at any depth; not the root

    @classmethod
    def of(cls, files: Collection[str]) -> _Repository:
        folders = {
            "/".join(parts[:end])
            for parts in (path.split("/") for path in files)
            for end in range(1, len(parts))
        }
        return cls(frozenset(files), frozenset(folders))


class _Graph:
    """Dependencies by task position; a duplicated id means its first task."""

    def __init__(self, tasks: Sequence[PlanTask]) -> None:
        self.tasks = tasks
        self.position: dict[str, int] = {}
        for index, task in enumerate(tasks):
            self.position.setdefault(task.id, index)

    @cached_property
    def prerequisites(self) -> tuple[frozenset[int], ...]:
        """For each task, the tasks it names in depends_on that exist, itself excluded."""
        return tuple(
            frozenset(self.position[dep] for dep in task.depends_on if dep in self.position)
            - {index}
            for index, task in enumerate(self.tasks)
        )

    @cached_property
    def ancestors(self) -> tuple[frozenset[int], ...]:
        """For each task, every task it waits for, directly or through others."""
        return tuple(self._reachable(index) for index in range(len(self.tasks)))

    def _reachable(self, start: int) -> frozenset[int]:
        seen: set[int] = set()
        waiting = list(self.prerequisites[start])
        while waiting:
            index = waiting.pop()
            if index not in seen:
                seen.add(index)
                waiting.extend(self.prerequisites[index])
        return frozenset(seen)

    def can_run_at_once(self, first: int, second: int) -> bool:
        return first not in self.ancestors[second] and second not in self.ancestors[first]


def _count_problems(plan: Plan, rules: PlanRules) -> Iterator[_Finding]:
    count = len(plan.tasks)
    if count == 0:
        yield _Finding(_WHOLE_PLAN, "the plan has no tasks; it needs at least one")
    elif count > rules.max_tasks:
        yield _Finding(
            _WHOLE_PLAN,
            f"the plan has {count} tasks; at most {rules.max_tasks} are allowed (max_tasks)",
        )


def _id_problems(tasks: Sequence[PlanTask]) -> Iterator[_Finding]:
    seen: set[str] = set()
    reported: set[str] = set()
    for index, task in enumerate(tasks):
        if not TASK_ID.fullmatch(task.id):
            yield _Finding(index, f"task id {_quoted(task.id)} should look like T{index + 1}")
        if task.id in seen and task.id not in reported:
            reported.add(task.id)
            yield _Finding(index, f"duplicate task id {_clipped(task.id)}")
        seen.add(task.id)


def _role_problems(tasks: Sequence[PlanTask]) -> Iterator[_Finding]:
    # The schema refuses unknown roles; a plan built in code with model_construct does not.
    for index, task in enumerate(tasks):
        if task.role not in ROLES:
            yield _Finding(
                index,
                f"{_clipped(task.id)} has role {_quoted(str(task.role))}; "
                f"use one of {', '.join(ROLES)}",
            )


def _dependency_problems(graph: _Graph) -> Iterator[_Finding]:
    for index, task in enumerate(graph.tasks):
        name = _clipped(task.id)
        for dep in dict.fromkeys(task.depends_on):
            if dep == task.id:
                yield _Finding(
                    index, f"{name} depends on itself; remove {name} from its depends_on"
                )
            elif dep not in graph.position:
                yield _Finding(
                    index, f"{name} depends on {_clipped(dep)}, which is not in the plan"
                )


def _cycle_problems(graph: _Graph) -> Iterator[_Finding]:
    """One cycle per group of tasks that wait for each other, from the group's first task."""
    grouped: set[int] = set()
    for start in range(len(graph.tasks)):
        if start in grouped:
            continue
        group = {other for other in graph.ancestors[start] if start in graph.ancestors[other]}
        if not group:
            continue
        grouped.update(group)
        names = [_clipped(graph.tasks[index].id) for index in _shortest_cycle(graph, start, group)]
        yield _Finding(
            start,
            f"the tasks form a cycle: {' → '.join(names)} (A → B: B depends on A); "
            "remove one of these dependencies",
        )


def _shortest_cycle(graph: _Graph, start: int, group: set[int]) -> list[int]:
    # Breadth first along "is needed by" edges, lower positions first, so the cycle is stable.
    came_from: dict[int, int] = {}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for nxt in sorted(i for i in group if current in graph.prerequisites[i]):
            if nxt == start:
                return [*_path_to(current, start, came_from), start]
            if nxt not in came_from:
                came_from[nxt] = current
                queue.append(nxt)
    raise AssertionError("a group of tasks waiting for each other always holds a cycle")


def _path_to(end: int, start: int, came_from: Mapping[int, int]) -> list[int]:
    path = [end]
    while path[-1] != start:
        path.append(came_from[path[-1]])
    return path[::-1]


def _write_set_problems(tasks: Sequence[PlanTask], repository: _Repository) -> Iterator[_Finding]:
    new_files = {path for task in tasks for path in task.files if path not in repository.files}
    for index, task in enumerate(tasks):
        name = _clipped(task.id)
        if task.role == "static_analyst" and task.files:
            yield _Finding(
                index,
                f"{name} is a static_analyst, which writes nothing; empty its files "
                "(what it reads goes in context_files)",
            )
            continue
        for path in dict.fromkeys(task.files):
            shape = _shape_problem(path)
            if shape:
                yield _Finding(index, f"{name} writes {_quoted(path)}, which {shape}")
            elif problem := _new_file_problem(path, repository, new_files):
                yield _Finding(index, f"{name} writes {_clipped(path)}, {problem}")


def _new_file_problem(path: str, repository: _Repository, new_files: set[str]) -> str | None:
    if path in repository.files:
        return None
    if path in repository.folders:
        return "which is a folder; list the files in it that the task changes"
    folder = posixpath.dirname(path)
    if not folder or folder in repository.folders:
        return None
    if any(other != path and posixpath.dirname(other) == folder for other in new_files):
        return None
    return (
        f"but neither it nor its folder {_clipped(folder)} exists; correct the path (a new file "
        "goes into an existing folder, or into a new one that other new files of the plan share)"
    )


def _context_problems(graph: _Graph, repository: _Repository) -> Iterator[_Finding]:
    for index, task in enumerate(graph.tasks):
        name = _clipped(task.id)
        # A file an earlier task creates exists by the time this one starts.
        written_before = {
            path for earlier in graph.ancestors[index] for path in graph.tasks[earlier].files
        }
        for path in dict.fromkeys(task.context_files):
            shape = _shape_problem(path)
            if shape:
                yield _Finding(index, f"{name} reads {_quoted(path)}, which {shape}")
            elif path in repository.folders:
                yield _Finding(
                    index, f"{name} reads {_clipped(path)}, which is a folder; list its files"
                )
            elif path not in repository.files and path not in written_before:
                yield _Finding(index, f"{name} reads {_clipped(path)}, which does not exist")


def _shape_problem(path: str) -> str | None:
    """What makes `path` unfit to name a file in the repository, with the fix; None when fit."""
    if not path:
        return "is empty; remove it"
    if any(not char.isprintable() for char in path):
        return "contains control characters; correct the path"
    if "\\" in path:
        return f"uses backslashes; write it as {_clipped(path.replace(chr(92), '/'))}"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "is absolute; use a path relative to the repository root"
    if ".." in path.split("/"):
        return "has a .. segment; use a path inside the repository without .."
    normal = posixpath.normpath(path)
    if normal.split("/")[0].lower() == ".git":
        return "is inside .git/; remove it (git's own files are off limits)"
    if normal != path:
        return f"is not in normal form; write it as {_clipped(normal)}"
    return None


def _gated_writes(tasks: Sequence[PlanTask], globs: Sequence[str]) -> dict[int, list[str]]:
    """For each task that writes protected paths, by position: those paths."""
    gated = {
        index: [path for path in dict.fromkeys(task.files) if protected(path, globs)]
        for index, task in enumerate(tasks)
    }
    return {index: paths for index, paths in gated.items() if paths}


def _gate_warnings(tasks: Sequence[PlanTask], gated: Mapping[int, list[str]]) -> Iterator[_Finding]:
    for index, paths in gated.items():
        name = _clipped(tasks[index].id)
        yield _Finding(
            index,
            f"{name} writes protected paths ({', '.join(_clipped(path) for path in paths)}); "
            f"its work joins the branch only after a person comments /approve-task {name}",
        )


def _shared_write_warnings(graph: _Graph) -> Iterator[_Finding]:
    tasks = graph.tasks
    for first in range(len(tasks)):
        for second in range(first + 1, len(tasks)):
            shared = [
                path for path in dict.fromkeys(tasks[first].files) if path in tasks[second].files
            ]
            if shared and graph.can_run_at_once(first, second):
                yield _Finding(
                    first,
                    f"{_clipped(tasks[first].id)} and {_clipped(tasks[second].id)} both write "
                    f"{', '.join(_clipped(path) for path in shared)} and could run at once; "
                    "the scheduler will run them one after the other",
                )


@cache
def _glob_pattern(glob: str) -> re.Pattern[str]:
    if glob.endswith("/"):
        glob += "**"
    anywhere = "/" not in glob
    pattern = ""
    for token in re.findall(r"\*\*/|/\*\*$|\*\*|\*|\?|[^*?]", glob.lstrip("/")):
        pattern += _GLOB_TOKENS.get(token) or re.escape(token)
    return re.compile(("(?:.*/)?" if anywhere else "") + pattern)


_GLOB_TOKENS = {
    "**/": "(?:.*/)?",  # zero or more folders
    "/**": "/.+",  # everything under the folder, not the folder itself
    "**": ".*",
    "*": "[^/]*",
    "?": "[^/]",
}


class _PlanLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a plan never needs them, and they can multiply a small text."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            # The stubs leave peek_event untyped.
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed in a plan", mark)
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_PlanLoader)  # a SafeLoader without aliases
    except yaml.MarkedYAMLError as error:
        raise PlanSyntaxError([_yaml_problem(error)]) from None
    except yaml.YAMLError as error:
        raise PlanSyntaxError([f"YAML error: {_clipped(str(error))}"]) from None


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = error.problem or error.context or "not valid YAML"
    message = f"YAML error{where}: {problem}"
    if error.problem and error.context and error.context_mark:
        start = error.context_mark
        message += f" ({error.context} from line {start.line + 1}, column {start.column + 1})"
    return message


def _kind(data: Any) -> str:
    if data is None:
        return "an empty document"
    if isinstance(data, list):
        return "a list"
    return f"a single value ({_clipped(repr(data))})"


def _schema_problems(error: ValidationError) -> list[str]:
    problems = [
        f"{_location(item['loc'])}: {item['msg']}{_got(item['type'], item.get('input'))}"
        for item in error.errors(include_url=False)
    ]
    if len(problems) > MAX_SYNTAX_PROBLEMS:
        more = len(problems) - MAX_SYNTAX_PROBLEMS
        problems = [*problems[:MAX_SYNTAX_PROBLEMS], f"... and {more} more problems"]
    return problems


def _location(loc: tuple[int | str, ...]) -> str:
    """`("tasks", 1, "role")` -> `tasks[1].role`; the whole document is `plan`."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{_clipped(part)}" if where else _clipped(part)
    return where or "plan"


def _got(error_type: str, value: Any) -> str:
    # Only a scalar is worth repeating; a missing field's "input" is the whole mapping around it.
    if error_type == "missing" or not isinstance(value, str | int | float | bool | type(None)):
        return ""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f" (got {value[:SHOWN_CHARS]!r}..., {len(value)} characters)"
    return f" (got {value!r})"


def _clipped(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _quoted(text: str) -> str:
    return json.dumps(_clipped(text), ensure_ascii=False)
