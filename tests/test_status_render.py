"""A run's status comment and its draft pull request's body: plan, checklist, graph coloured by
state, per-task table, cost, findings and tests, with model and worker text made inert."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from bot.github.repo import status_marker
from bot.plan.render import (
    FINDINGS_CHARS,
    GITHUB_BODY_CHARS,
    LEFT_OUT,
    Droppable,
    Finding,
    RunProgress,
    TaskProgress,
    mermaid,
    render_pull_request,
    render_status,
    spend_text,
    task_checklist,
    task_table,
    within_github_limit,
)
from bot.plan.schema import Plan, PlanTask
from bot.plan.validate import parse_plan_yaml

MODEL = "example/worker-model"
HOSTILE = "@alice <!-- x --> <img src=x onerror=alert(1)> ``` | *"


def planned(task_id: str, title: str, depends_on: list[str]) -> PlanTask:
    return PlanTask(
        id=task_id,
        title=title,
        role="implementer",
        description="what and why",
        depends_on=depends_on,
        files=[f"src/{task_id.lower()}.py"],
        acceptance="the tests pass",
    )


PLAN = Plan(
    summary="Add a dial widget. See #12.",
    tasks=[
        planned("T1", "Add the dial", []),
        planned("T2", "Test the dial", ["T1"]),
        planned("T3", "Document the dial", ["T1"]),
    ],
)


def progress_of(*states: str, plan: Plan = PLAN, unpriced_calls: int = 0) -> RunProgress:
    tasks = [
        TaskProgress(task.id, task.title, state, task.role, MODEL, 1234 * n, 0.0125 * n, n)
        for n, (task, state) in enumerate(zip(plan.tasks, states, strict=True), start=1)
    ]
    return RunProgress(plan, [1], tasks, 7404, 0.075, unpriced_calls)


def pull_request(progress: RunProgress, findings: list[Finding] | None = None) -> str:
    return render_pull_request(
        12, progress, findings or [], tests_passed=True, test_output="3 passed in 0.1s\n"
    )


def test_the_status_shows_plan_checklist_graph_table_and_cost_in_order() -> None:
    body = render_status("**Executing**", progress_of("integrated", "running", "pending"))

    parts = [
        "**Executing**\n\n### Plan (r1)\n\nAdd a dial widget. See #12.\n\n",
        "- [x] **T1** Add the dial — integrated\n"
        "- [ ] **T2** Test the dial — running\n"
        "- [ ] **T3** Document the dial — pending\n\n",
        "```mermaid\nflowchart TD\n",
        "| Task | Role | Model | Tokens | Cost | Attempts |\n",
        "**Cost so far:** $0.0750 · 7,404 tokens\n",
    ]
    positions = [body.index(part) for part in parts]
    assert positions == sorted(positions)
    assert body.endswith(parts[-1])


def test_the_checklist_checks_the_tasks_whose_work_is_in() -> None:
    states = ("accepted", "awaiting_approval", "skipped")

    assert task_checklist(progress_of(*states).tasks) == (
        "- [x] **T1** Add the dial — accepted\n"
        "- [ ] **T2** Test the dial — awaiting approval\n"
        "- [ ] **T3** Document the dial — skipped"
    )


def test_the_graph_colours_each_task_by_its_state() -> None:
    graph = mermaid(PLAN, {"T1": "integrated", "T2": "failed", "T3": "pending"})

    assert graph == (
        "```mermaid\n"
        "flowchart TD\n"
        '  T1["T1: Add the dial"]\n'
        '  T2["T2: Test the dial"]\n'
        '  T3["T3: Document the dial"]\n'
        "  T1 --> T2\n"
        "  T1 --> T3\n"
        "  classDef integrated fill:#dafbe1,stroke:#1a7f37\n"
        "  class T1 integrated\n"
        "  classDef failed fill:#ffebe9,stroke:#cf222e\n"
        "  class T2 failed\n"
        "```"
    )


def test_tasks_in_one_state_share_one_class_line_and_unknown_states_get_none() -> None:
    graph = mermaid(PLAN, {"T1": "running", "T2": "reviewing", "T3": "running", "T9": "failed"})

    assert "  class T1,T3 running\n  classDef reviewing" in graph
    assert graph.count("classDef") == 2
    assert "failed" not in graph
    assert mermaid(PLAN, {}) == mermaid(PLAN)


def test_the_table_gives_role_model_tokens_cost_and_attempts() -> None:
    assert task_table(progress_of("integrated", "integrated", "integrated").tasks) == (
        "| Task | Role | Model | Tokens | Cost | Attempts |\n"
        "|---|---|---|---|---|---|\n"
        f"| T1 | implementer | {MODEL} | 1,234 | $0.0125 | 1 |\n"
        f"| T2 | implementer | {MODEL} | 2,468 | $0.0250 | 2 |\n"
        f"| T3 | implementer | {MODEL} | 3,702 | $0.0375 | 3 |"
    )


@pytest.mark.parametrize(
    ("unpriced", "text"),
    [
        (0, "$0.0750 · 7,404 tokens"),
        (1, "$0.0750 · 7,404 tokens (1 model call of unknown price not counted)"),
        (3, "$0.0750 · 7,404 tokens (3 model calls of unknown price not counted)"),
    ],
    ids=["priced", "one-unpriced", "several-unpriced"],
)
def test_spend_text_says_when_calls_are_not_counted(unpriced: int, text: str) -> None:
    assert spend_text(progress_of("pending", "pending", "pending", unpriced_calls=unpriced)) == text


def test_the_pull_request_shows_the_final_plan_table_cost_and_tests() -> None:
    body = pull_request(progress_of("integrated", "integrated", "skipped"))

    parts = [
        "Closes #12.\n\n## Plan\n\nAdd a dial widget. See #12.\n\n```mermaid\nflowchart TD\n",
        "  class T1,T2 integrated\n  classDef skipped",
        "<details><summary>Plan as YAML (r1)</summary>\n\n```yaml\nsummary: ",
        "## Tasks\n\n| Task | Role | Model | Tokens | Cost | Attempts |\n",
        "**Skipped by a person:** T3\n\n**Cost:** $0.0750 · 7,404 tokens\n\n",
        "## Tests\n\nTests on the branch: passed\n\n```\n3 passed in 0.1s\n```\n",
    ]
    positions = [body.index(part) for part in parts]
    assert positions == sorted(positions)
    assert body.endswith(parts[-1])
    assert "## Findings" not in body
    found = re.search(r"```yaml\n(.*?)\n```", body, re.S)
    assert found is not None
    assert parse_plan_yaml(found.group(1)) == PLAN


def test_a_plan_of_several_revisions_keeps_its_summaries_apart() -> None:
    plan = PLAN.model_copy(update={"summary": "Add a dial.\n\nFrom the review:\n  add a knob."})
    progress = replace(
        progress_of("integrated", "integrated", "integrated", plan=plan), revisions=[2, 3]
    )

    body = pull_request(progress)

    assert "## Plan\n\nAdd a dial.\n\nFrom the review: add a knob.\n\n```mermaid" in body
    assert "<summary>Plan as YAML (r2, r3)</summary>" in body
    assert "### Plan (r2, r3)\n\n" in render_status("**Executing**", progress)


def test_findings_are_fenced_under_their_task_before_the_tests() -> None:
    findings = [Finding("T3", "Look for bare excepts", "Two bare excepts.\n\nIn a.py and b.py.")]

    body = pull_request(progress_of("integrated", "integrated", "integrated"), findings)

    assert (
        "## Findings\n\n**T3** Look for bare excepts\n\n"
        "```\nTwo bare excepts.\n\nIn a.py and b.py.\n```\n\n## Tests\n\n"
    ) in body


def test_hostile_worker_and_model_text_is_inert_everywhere() -> None:
    plan = Plan(summary=f"Summary {HOSTILE}", tasks=[planned("T1", f"Title {HOSTILE}", [])])
    task = TaskProgress("T1", f"Title {HOSTILE}", "integrated", "implementer", HOSTILE, 1, 0.0, 1)
    progress = RunProgress(plan, [1], [task], 1, 0.0)
    findings = [Finding("T1", f"Title {HOSTILE}", f"Found {HOSTILE}\n```\nstill fenced")]

    for body in (render_status("**Done**", progress), pull_request(progress, findings)):
        assert "<!--" not in body  # the status comment is found by such a marker
        outside = re.sub(r"^(`{3,})[a-z]*\n.*?\n\1$", "", body, flags=re.S | re.M)
        assert "<img" not in outside
        markup = ("<details><summary>", "</summary>", "</details>")
        assert "<" not in re.sub("|".join(markup), "", outside)
        assert "@alice" not in outside  # written `@&#8205;alice`, which pings nobody
        assert "@&#8205;alice" in outside
    # The fence is longer than any run of backticks inside, so the findings cannot close it; a
    # comment opener in them is broken, as the status marker is one.
    shown = "Found @alice <\u200b!-- x --> <img src=x onerror=alert(1)> ``` | *\n```\nstill fenced"
    assert f"````\n{shown}\n````" in pull_request(progress, findings)


def test_long_findings_are_cut_with_a_note() -> None:
    findings = [Finding("T1", "Lint", "x" * (FINDINGS_CHARS * 2))]

    body = pull_request(progress_of("integrated", "integrated", "integrated"), findings)

    fenced_text = body.split("**T1** Lint\n\n```\n", 1)[1].split("\n```", 1)[0]
    assert len(fenced_text) == FINDINGS_CHARS
    assert fenced_text.endswith("more characters ...]")


def test_rendering_is_deterministic() -> None:
    progress = progress_of("integrated", "running", "failed")
    findings = [Finding("T1", "Lint", "all clear")]

    assert render_status("**Executing**", progress) == render_status("**Executing**", progress)
    assert pull_request(progress, findings) == pull_request(progress, findings)


def test_a_body_too_long_for_github_drops_the_yaml_first_and_keeps_tables_and_tests() -> None:
    # Fifty tasks (the most `max_tasks` allows) with long descriptions, and talkative analysts.
    tasks = [planned(f"T{n}", f"Step {n}", []) for n in range(1, 51)]
    plan = Plan(
        summary="Many steps.",
        tasks=[task.model_copy(update={"description": "why " * 400}) for task in tasks],
    )
    progress = RunProgress(
        plan,
        [1],
        [TaskProgress(t.id, t.title, "integrated", t.role, MODEL, 1, 0.0, 1) for t in plan.tasks],
        50,
        0.0,
    )
    some = [Finding(f"T{n}", "Lint", "y" * FINDINGS_CHARS) for n in range(1, 11)]
    many = [Finding(f"T{n}", "Lint", "y" * FINDINGS_CHARS) for n in range(1, 21)]

    fits_without_yaml = pull_request(progress, some)
    too_much = pull_request(progress, many)

    assert len(fits_without_yaml) <= GITHUB_BODY_CHARS
    assert "Plan as YAML" not in fits_without_yaml
    assert fits_without_yaml.count(LEFT_OUT) == 1
    assert "```mermaid" in fits_without_yaml
    assert "## Findings" in fits_without_yaml
    # Then the graph, then the findings; the table and the tests always stay.
    assert len(too_much) <= GITHUB_BODY_CHARS
    assert too_much.count(LEFT_OUT) == 3
    assert "```mermaid" not in too_much
    assert "## Findings" not in too_much
    for body in (fits_without_yaml, too_much):
        assert "| T50 |" in body
        assert "## Tests" in body


def test_sections_are_dropped_highest_rank_first_and_only_as_needed() -> None:
    a, b = "a" * 500, "b" * 500
    sections = ["head", Droppable(a, 1), Droppable(b, 2), "tail"]

    assert within_github_limit(sections, limit=1100) == f"head\n\n{a}\n\n{b}\n\ntail\n"
    assert within_github_limit(sections, limit=700) == f"head\n\n{a}\n\n{LEFT_OUT}\n\ntail\n"
    assert within_github_limit(sections, limit=300) == f"head\n\n{LEFT_OUT}\n\n{LEFT_OUT}\n\ntail\n"


def test_text_too_long_with_nothing_left_to_drop_is_cut_at_a_line_end() -> None:
    text = within_github_limit(["line\n" * 100], limit=len(LEFT_OUT) + 60)

    assert len(text) <= len(LEFT_OUT) + 60
    assert text.endswith(f"line\n\n{LEFT_OUT}\n")


def test_a_huge_summary_is_cut_and_the_tables_and_tests_stay() -> None:
    huge = Plan(summary="word\n\n" * 20_000, tasks=PLAN.tasks)
    progress = replace(progress_of("integrated", "integrated", "integrated"), plan=huge)
    marker = status_marker("0123456789abcdef")

    status = render_status("**Done**", progress)
    body = pull_request(progress)

    for text in (status, body):
        assert len(f"{marker}\n{text}") <= GITHUB_BODY_CHARS  # as the client posts it
        assert "more characters" in text
        assert "| T3 |" in text
    assert "- [x] **T3**" in status
    assert "## Tests" in body
