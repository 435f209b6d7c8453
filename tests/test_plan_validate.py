"""Plan checks: each rule's exact message, cycles, shared files, gates, and `/edit-plan` YAML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.plan.render import plan_yaml
from bot.plan.schema import Plan, PlanTask, Role
from bot.plan.validate import (
    PlanCheck,
    PlanRules,
    PlanSyntaxError,
    check_plan,
    parse_plan_yaml,
    protected,
)

FILES = frozenset(
    {
        "README.md",
        "pyproject.toml",
        "poetry.lock",
        "src/app/core.py",
        "src/app/api.py",
        "src/app/__init__.py",
        "tests/test_core.py",
        "migrations/0001_initial.py",
        ".github/workflows/ci.yml",
    }
)
RULES = PlanRules()


def task(
    task_id: str,
    *,
    role: str = "implementer",
    depends_on: Sequence[str] = (),
    files: Sequence[str] = (),
    context_files: Sequence[str] = (),
) -> PlanTask:
    # model_construct, so a test can also build what the schema would refuse.
    return PlanTask.model_construct(
        id=task_id,
        title=f"Do {task_id}",
        role=cast(Role, role),
        description="what and why",
        depends_on=list(depends_on),
        files=list(files),
        context_files=list(context_files),
        acceptance="the tests pass",
    )


def plan(*tasks: PlanTask) -> Plan:
    return Plan.model_construct(summary="Make the app faster.", tasks=list(tasks))


def errors_of(checked: Plan, rules: PlanRules = RULES) -> tuple[str, ...]:
    return check_plan(checked, FILES, rules).errors


def diamond() -> Plan:
    return plan(
        task("T1", files=["src/app/core.py"], context_files=["src/app/__init__.py"]),
        task("T2", depends_on=["T1"], files=["src/app/api.py"]),
        task("T3", role="test_writer", depends_on=["T1"], files=["tests/test_api.py"]),
        task("T4", role="refactorer", depends_on=["T2", "T3"], files=["src/app/api.py"]),
        task("T5", role="static_analyst", depends_on=["T4"], context_files=["src/app/api.py"]),
    )


def test_a_diamond_of_five_tasks_passes_cleanly() -> None:
    assert check_plan(diamond(), FILES, RULES) == PlanCheck((), (), frozenset())


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            [task("T1"), task("T2"), task("T2")],
            "duplicate task id T2",
        ),
        (
            [task("task-1")],
            'task id "task-1" should look like T1',
        ),
        (
            [task("T1"), task("T02")],
            'task id "T02" should look like T2',
        ),
        (
            [task("T1", role="wizard")],
            'T1 has role "wizard"; use one of implementer, test_writer, refactorer, static_analyst',
        ),
        (
            [task("T1"), task("T4", depends_on=["T1", "T9"])],
            "T4 depends on T9, which is not in the plan",
        ),
        (
            [task("T1", depends_on=["T1"])],
            "T1 depends on itself; remove T1 from its depends_on",
        ),
        (
            [task("T1", files=["/etc/passwd"])],
            'T1 writes "/etc/passwd", which is absolute; use a path relative to the repository '
            "root",
        ),
        (
            [task("T1", files=["C:/src/app.py"])],
            'T1 writes "C:/src/app.py", which is absolute; use a path relative to the repository '
            "root",
        ),
        (
            [task("T1", files=["src/../../secrets.txt"])],
            'T1 writes "src/../../secrets.txt", which has a .. segment; use a path inside the '
            "repository without ..",
        ),
        (
            [task("T1", files=[".git/hooks/pre-commit"])],
            'T1 writes ".git/hooks/pre-commit", which is inside .git/; remove it (git\'s own '
            "files are off limits)",
        ),
        (
            [task("T1", files=["./.git/config"])],
            'T1 writes "./.git/config", which is inside .git/; remove it (git\'s own files are off '
            "limits)",
        ),
        (
            [task("T1", files=["./src//app/core.py"])],
            'T1 writes "./src//app/core.py", which is not in normal form; write it as '
            "src/app/core.py",
        ),
        (
            [task("T1", files=["src/app/"])],
            'T1 writes "src/app/", which is not in normal form; write it as src/app',
        ),
        (
            [task("T1", files=["src\\app\\core.py"])],
            'T1 writes "src\\\\app\\\\core.py", which uses backslashes; write it as '
            "src/app/core.py",
        ),
        (
            [task("T1", files=[""])],
            'T1 writes "", which is empty; remove it',
        ),
        (
            [task("T1", files=["src/app\n.py"])],
            'T1 writes "src/app\\n.py", which contains control characters; correct the path',
        ),
        (
            [task("T1", files=["src/app"])],
            "T1 writes src/app, which is a folder; list the files in it that the task changes",
        ),
        (
            [task("T1", files=["scr/app/dial.py"])],
            "T1 writes scr/app/dial.py, but neither it nor its folder scr/app exists; correct the "
            "path (a new file goes into an existing folder, or into a new one that other new "
            "files of the plan share)",
        ),
        (
            [task("T1", role="static_analyst", files=["src/app/core.py"])],
            "T1 is a static_analyst, which writes nothing; empty its files (what it reads goes in "
            "context_files)",
        ),
        (
            [task("T1", context_files=["src/missing.py"])],
            "T1 reads src/missing.py, which does not exist",
        ),
        (
            [task("T1", context_files=["src/app"])],
            "T1 reads src/app, which is a folder; list its files",
        ),
        (
            [task("T1", context_files=["../outside.py"])],
            'T1 reads "../outside.py", which has a .. segment; use a path inside the repository '
            "without ..",
        ),
        (
            [task(f"T{number}") for number in range(1, 12)],
            "the plan has 11 tasks; at most 8 are allowed (max_tasks)",
        ),
        (
            [],
            "the plan has no tasks; it needs at least one",
        ),
    ],
    ids=[
        "duplicate id",
        "id not like T1",
        "id with a leading zero",
        "unknown role",
        "missing dependency",
        "self dependency",
        "absolute path",
        "windows drive",
        "dot-dot segment",
        "inside .git",
        "inside .git once normalised",
        "not normalised",
        "trailing slash",
        "backslashes",
        "empty path",
        "control character",
        "writes a folder",
        "new file in a missing folder",
        "static analyst writes",
        "missing context file",
        "context folder",
        "context outside the repository",
        "too many tasks",
        "no tasks",
    ],
)
def test_each_rule_names_the_problem_exactly(tasks: list[PlanTask], message: str) -> None:
    assert errors_of(plan(*tasks)) == (message,)


@pytest.mark.parametrize(
    "tasks",
    [
        [task("T1", files=["CHANGELOG.md"])],
        [task("T1", files=["src/app/dial.py"])],
        [task("T1", files=["src/dial/__init__.py"]), task("T2", files=["src/dial/widget.py"])],
        [task("T1", files=["src/dial/__init__.py", "src/dial/widget.py"])],
        [
            task("T1", files=["src/app/dial.py"]),
            task("T2", depends_on=["T1"], context_files=["src/app/dial.py"]),
        ],
        [
            task("T1", files=["src/app/dial.py"]),
            task("T2", depends_on=["T1"]),
            task("T3", depends_on=["T2"], context_files=["src/app/dial.py"]),
        ],
        [task(f"T{number}") for number in range(1, 9)],
    ],
    ids=[
        "new file at the root",
        "new file in an existing folder",
        "new folder shared by two tasks' new files",
        "new folder shared by one task's new files",
        "reads what its prerequisite writes",
        "reads what an earlier task writes, transitively",
        "exactly max_tasks",
    ],
)
def test_plans_within_the_rules_have_no_errors(tasks: list[PlanTask]) -> None:
    assert errors_of(plan(*tasks)) == ()


def test_reading_a_new_file_of_a_task_that_may_run_at_the_same_time_is_an_error() -> None:
    checked = plan(
        task("T1", files=["src/app/dial.py"]), task("T2", context_files=["src/app/dial.py"])
    )

    assert errors_of(checked) == ("T2 reads src/app/dial.py, which does not exist",)


def test_max_tasks_comes_from_the_rules() -> None:
    checked = plan(task("T1"), task("T2"), task("T3"))

    assert errors_of(checked, PlanRules(max_tasks=2)) == (
        "the plan has 3 tasks; at most 2 are allowed (max_tasks)",
    )


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            [task("T1", depends_on=["T1"])],
            "T1 depends on itself; remove T1 from its depends_on",
        ),
        (
            [task("T1", depends_on=["T2"]), task("T2", depends_on=["T1"])],
            "the tasks form a cycle: T1 → T2 → T1 (A → B: B depends on A); remove one of these "
            "dependencies",
        ),
        (
            [
                task("T1", depends_on=["T2"]),
                task("T2", depends_on=["T3"]),
                task("T3", depends_on=["T1"]),
            ],
            "the tasks form a cycle: T1 → T3 → T2 → T1 (A → B: B depends on A); remove one of "
            "these dependencies",
        ),
        (
            [task("T0a"), task("T2", depends_on=["T3"]), task("T3", depends_on=["T2", "T0a"])],
            "the tasks form a cycle: T2 → T3 → T2 (A → B: B depends on A); remove one of these "
            "dependencies",
        ),
    ],
    ids=["length 1", "length 2", "length 3", "cycle after an acyclic task"],
)
def test_a_cycle_is_named_from_its_first_task(tasks: list[PlanTask], message: str) -> None:
    assert message in errors_of(plan(*tasks))


def test_each_group_of_tasks_waiting_for_each_other_gets_one_message() -> None:
    checked = plan(
        task("T1", depends_on=["T2", "T3"]),
        task("T2", depends_on=["T1", "T3"]),
        task("T3", depends_on=["T1"]),
        task("T4", depends_on=["T5"]),
        task("T5", depends_on=["T4"]),
    )

    assert errors_of(checked) == (
        "the tasks form a cycle: T1 → T2 → T1 (A → B: B depends on A); remove one of these "
        "dependencies",
        "the tasks form a cycle: T4 → T5 → T4 (A → B: B depends on A); remove one of these "
        "dependencies",
    )


def test_messages_come_in_task_order_then_rule_order() -> None:
    checked = plan(
        task("T1", files=["/abs.py"], context_files=["gone.py"]),
        task("T2", depends_on=["T7"], files=["nowhere/x.py"]),
        task("bad", role="static_analyst", files=["README.md"]),
    )

    assert errors_of(checked, PlanRules(max_tasks=2)) == (
        "the plan has 3 tasks; at most 2 are allowed (max_tasks)",
        'T1 writes "/abs.py", which is absolute; use a path relative to the repository root',
        "T1 reads gone.py, which does not exist",
        "T2 depends on T7, which is not in the plan",
        "T2 writes nowhere/x.py, but neither it nor its folder nowhere exists; correct the path "
        "(a new file goes into an existing folder, or into a new one that other new files of "
        "the plan share)",
        'task id "bad" should look like T3',
        "bad is a static_analyst, which writes nothing; empty its files (what it reads goes in "
        "context_files)",
    )


def test_a_huge_value_is_clipped_in_the_message() -> None:
    (message,) = errors_of(plan(task("T1", context_files=["x" * 5000])))

    assert message == f"T1 reads {'x' * 77}..., which does not exist"


SHARED = (
    "T2 and T3 both write src/app/api.py and could run at once; the scheduler will run them "
    "one after the other"
)


@pytest.mark.parametrize(
    ("tasks", "warnings"),
    [
        (
            [
                task("T1"),
                task("T2", depends_on=["T1"], files=["src/app/api.py"]),
                task("T3", depends_on=["T1"], files=["src/app/api.py", "README.md"]),
            ],
            (SHARED,),
        ),
        (
            [
                task("T1", files=["src/app/api.py", "README.md"]),
                task("T2", files=["README.md", "src/app/api.py"]),
            ],
            (
                "T1 and T2 both write src/app/api.py, README.md and could run at once; the "
                "scheduler will run them one after the other",
            ),
        ),
        (
            [
                task("T1", files=["src/app/api.py"]),
                task("T2", depends_on=["T1"], files=["src/app/api.py"]),
            ],
            (),
        ),
        (
            [
                task("T1", files=["src/app/api.py"]),
                task("T2", depends_on=["T1"]),
                task("T3", depends_on=["T2"], files=["src/app/api.py"]),
            ],
            (),
        ),
    ],
    ids=["siblings", "several files", "direct chain", "transitive chain"],
)
def test_shared_files_warn_only_for_tasks_that_could_run_at_once(
    tasks: list[PlanTask], warnings: tuple[str, ...]
) -> None:
    checked = check_plan(plan(*tasks), FILES, RULES)

    assert checked.warnings == warnings
    assert checked.errors == ()


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("migrations/**", "migrations/0002_add.py", True),
        ("migrations/**", "migrations/old/0001.py", True),
        ("migrations/**", "app/migrations/0002.py", False),
        ("migrations/**", "migrations", False),
        ("migrations/", "migrations/0002_add.py", True),
        (".github/**", ".github/workflows/ci.yml", True),
        ("*.lock", "poetry.lock", True),
        ("*.lock", "frontend/yarn.lock", True),
        ("*.lock", "poetry.lock.bak", False),
        ("/*.lock", "frontend/yarn.lock", False),
        ("src/*.py", "src/app.py", True),
        ("src/*.py", "src/app/core.py", False),
        ("src/**/*.py", "src/app.py", True),
        ("src/**/*.py", "src/app/deep/core.py", True),
        ("docs/?.md", "docs/a.md", True),
        ("docs/?.md", "docs/ab.md", False),
        ("a+b/[x].py", "a+b/[x].py", True),
    ],
    ids=[
        "double star under a folder",
        "double star deeper",
        "double star anchored at the root",
        "double star not the folder itself",
        "trailing slash",
        "dot folder",
        "name glob at the root",
        "name glob at any depth",
        "name glob whole name",
        "leading slash anchors",
        "single star in one folder",
        "single star stays in its folder",
        "double star slash spans zero folders",
        "double star slash spans many folders",
        "question mark one character",
        "question mark only one",
        "regex characters are literal",
    ],
)
def test_protected_globs(glob: str, path: str, matches: bool) -> None:
    assert protected(path, [glob]) is matches


def test_tasks_writing_protected_paths_are_gated_with_a_warning() -> None:
    checked = plan(
        task("T1", files=["migrations/0002_add.py", "src/app/core.py", "poetry.lock"]),
        task("T2", depends_on=["T1"], files=["src/app/api.py"], context_files=["poetry.lock"]),
    )
    rules = PlanRules(protected_paths=("migrations/**", "*.lock"))

    assert check_plan(checked, FILES, rules) == PlanCheck(
        errors=(),
        warnings=(
            "T1 writes protected paths (migrations/0002_add.py, poetry.lock); its work joins "
            "the branch only after a person comments /approve-task T1",
        ),
        gated=frozenset({"T1"}),
    )


YAML_PLAN = """\
summary: Add a dial widget.
tasks:
  - id: T1
    title: Add the dial
    role: implementer
    description: Render a dial.
    files: [src/app/dial.py]
    acceptance: render_dial returns markup
"""


def test_yaml_is_read_into_a_plan_with_defaults() -> None:
    parsed = parse_plan_yaml(YAML_PLAN)

    assert parsed.tasks[0].files == ["src/app/dial.py"]
    assert parsed.tasks[0].depends_on == []
    assert parsed.tasks[0].effort is None
    assert parse_plan_yaml(plan_yaml(parsed)) == parsed


def test_an_effort_survives_a_yaml_round_trip() -> None:
    parsed = parse_plan_yaml(YAML_PLAN + "    effort: 4\n")

    assert parsed.tasks[0].effort == 4
    assert parse_plan_yaml(plan_yaml(parsed)) == parsed


def test_the_diamond_survives_a_yaml_round_trip() -> None:
    real = Plan.model_validate(diamond().model_dump())

    assert parse_plan_yaml(plan_yaml(real)) == real


# Any text, and text dense in what YAML treats specially (PyYAML mishandles \x85 unless escaped).
hostile_text = st.text(max_size=40) | st.text(
    alphabet=" \n\r\t\x85\u2028ab:#-|>'\"`&*", max_size=40
)


@given(summary=hostile_text.filter(bool), title=hostile_text, description=hostile_text)
def test_any_text_survives_a_yaml_round_trip(summary: str, title: str, description: str) -> None:
    real = Plan(
        summary=summary,
        tasks=[
            PlanTask(
                id="T1",
                title=title or "x",
                role="implementer",
                description=description,
                files=[description],
                acceptance=title,
            )
        ],
    )

    assert parse_plan_yaml(plan_yaml(real)) == real


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "summary: [unclosed\ntasks: []\n",
            (
                "YAML error at line 2, column 6: expected ',' or ']', but got ':' (while parsing "
                "a flow sequence from line 1, column 10)",
            ),
        ),
        (
            "summary: s\n  tasks: x\n",
            ("YAML error at line 2, column 8: mapping values are not allowed here",),
        ),
        (
            "summary: 'never closed\ntasks: []\n",
            (
                "YAML error at line 3, column 1: found unexpected end of stream (while scanning a "
                "quoted scalar from line 1, column 10)",
            ),
        ),
        (
            "summary: &s Add a dial.\ntasks: *s\n",
            ("YAML error at line 2, column 8: aliases are not allowed in a plan",),
        ),
        (
            "- T1\n- T2\n",
            ("the plan must be a YAML mapping with summary and tasks, not a list",),
        ),
        (
            "",
            ("the plan must be a YAML mapping with summary and tasks, not an empty document",),
        ),
        (
            "just words\n",
            (
                "the plan must be a YAML mapping with summary and tasks, not a single value "
                "('just words')",
            ),
        ),
        (
            YAML_PLAN.replace("role: implementer", "role: wizard"),
            (
                "tasks[0].role: Input should be 'implementer', 'test_writer', 'refactorer' or "
                "'static_analyst' (got 'wizard')",
            ),
        ),
        (
            YAML_PLAN.replace("    acceptance: render_dial returns markup\n", "    owner: bob\n"),
            (
                "tasks[0].acceptance: Field required",
                "tasks[0].owner: Extra inputs are not permitted (got 'bob')",
            ),
        ),
        (
            YAML_PLAN + "  - 5\n",
            ("tasks[1]: Input should be a valid dictionary or instance of PlanTask (got 5)",),
        ),
        (
            YAML_PLAN.replace("title: Add the dial", "title: " + "x" * 500),
            (
                "tasks[0].title: String should have at most 120 characters (got "
                f"'{'x' * 80}'..., 500 characters)",
            ),
        ),
        (
            YAML_PLAN + "    effort: 6\n",
            ("tasks[0].effort: Input should be less than or equal to 5 (got 6)",),
        ),
        (
            YAML_PLAN + "    effort: big\n",
            (
                "tasks[0].effort: Input should be a valid integer, unable to parse string as an"
                " integer (got 'big')",
            ),
        ),
        (
            "summary: ''\ntasks: {}\n",
            (
                "summary: String should have at least 1 character (got '')",
                "tasks: Input should be a valid list",
            ),
        ),
    ],
    ids=[
        "unclosed flow sequence",
        "bad indentation",
        "unclosed quote",
        "alias",
        "a list",
        "empty",
        "a scalar",
        "unknown role",
        "missing and extra fields",
        "task not a mapping",
        "huge value clipped",
        "effort above 5",
        "effort not a number",
        "wrong types",
    ],
)
def test_yaml_problems_are_named_exactly(text: str, problems: tuple[str, ...]) -> None:
    with pytest.raises(PlanSyntaxError) as raised:
        parse_plan_yaml(text)

    assert raised.value.problems == problems
    assert str(raised.value) == "\n".join(problems)


def test_a_plan_with_many_problems_lists_the_first_twenty() -> None:
    text = "summary: s\ntasks:\n" + "  - 1\n" * 25

    with pytest.raises(PlanSyntaxError) as raised:
        parse_plan_yaml(text)

    assert len(raised.value.problems) == 21
    assert raised.value.problems[-1] == "... and 5 more problems"
