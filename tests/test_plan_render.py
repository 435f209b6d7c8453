"""The plan's status comment: table, graph, YAML, cost and commands, with model text made inert."""

from __future__ import annotations

import pytest

from bot.llm.budget import BudgetLimits
from bot.llm.pricing import Price, PriceTable
from bot.plan.render import (
    GITHUB_BODY_CHARS,
    LEFT_OUT,
    MARKER_ROOM,
    PLAN_COMMENT_CHARS,
    REVIEW,
    WORKER_ATTEMPT,
    budget_line,
    cost_text,
    estimate_cost,
    markdown_text,
    mermaid,
    plan_length_problem,
    plan_yaml,
    render_plan,
    render_problems,
    single_agent_cost,
    unpriced_models,
)
from bot.plan.schema import Plan, PlanTask
from bot.plan.validate import PlanCheck, PlanRules, check_plan, parse_plan_yaml

COMMANDS = ["/approve-plan", "/revise-plan <feedback>", "/edit-plan", "/cancel"]
HOSTILE_TITLE = "| @alice <!-- x --> ```"
WORKER = "anthropic/claude-sonnet-4-5"
ORCHESTRATOR = "anthropic/claude-opus-4-6"
INSTANCE_DEFAULTS = BudgetLimits(task_usd=5.0, run_usd=20.0)


def task(
    task_id: str, title: str, *, depends_on: list[str], files: list[str], effort: int | None = None
) -> PlanTask:
    return PlanTask(
        id=task_id,
        title=title,
        role="implementer",
        description="what and why",
        depends_on=depends_on,
        files=files,
        acceptance="the tests pass",
        effort=effort,
    )


def sample_plan(first_title: str = "Add the dial") -> Plan:
    return Plan(
        summary="Add a dial widget, then test it. See #12.",
        tasks=[
            task("T1", first_title, depends_on=[], files=["src/dial.py", "migrations/0002.py"]),
            task("T2", "Test the dial", depends_on=["T1"], files=["tests/test_dial.py"], effort=2),
            task("T3", "Document the dial", depends_on=["T1"], files=["README.md"]),
        ],
    )


def rendered(plan: Plan, check: PlanCheck | None = None, estimated_usd: float | None = 0.42) -> str:
    return render_plan(
        plan,
        revision=2,
        check=check or PlanCheck((), (), frozenset()),
        estimated_usd=estimated_usd,
        commands=COMMANDS,
        heading="Plan r2 — waiting for approval",
    )


def test_the_body_shows_each_part_in_order() -> None:
    body = rendered(sample_plan())

    parts = [
        "## Plan r2 — waiting for approval\n\nAdd a dial widget, then test it. See #12.\n\n",
        "| Task | Role | Title | Depends on | Files | Gate | Effort |\n"
        "|---|---|---|---|---|---|---|\n",
        "```mermaid\nflowchart TD\n",
        "**Estimated cost:** about $0.42 (one worker attempt and one review per task)\n\n",
        "<details><summary>Plan as YAML (r2)</summary>\n\n```yaml\nsummary: ",
        "**Commands**\n\n- `/approve-plan`\n- `/revise-plan <feedback>`\n- `/edit-plan`\n"
        "- `/cancel`\n",
    ]
    positions = [body.index(part) for part in parts]
    assert positions == sorted(positions)
    assert body.endswith("- `/cancel`\n")
    assert "**Warnings**" not in body
    assert "**Problems**" not in body


def test_the_table_has_a_row_per_task_with_dependencies_files_and_gates() -> None:
    plan = sample_plan()
    check = check_plan(
        plan,
        ["src/dial.py", "migrations/0001.py", "tests/test_x.py", "README.md"],
        PlanRules(protected_paths=("migrations/**",)),
    )

    body = rendered(plan, check)

    assert (
        "| T1 | implementer | Add the dial | — | src/dial.py<br>migrations/0002.py "
        "| needs /approve-task | — |\n"
        "| T2 | implementer | Test the dial | T1 | tests/test\\_dial.py |  | 2 |\n"
        "| T3 | implementer | Document the dial | T1 | README.md |  | — |\n"
    ) in body
    assert (
        "**Warnings**\n\n"
        "- T1 writes protected paths (migrations/0002.py); its work joins the branch only after "
        "a person comments /approve-task T1\n\n"
    ) in body


def test_errors_of_the_check_are_listed() -> None:
    body = rendered(
        sample_plan(), PlanCheck(("T2 reads src/gone.py, which does not exist",), (), frozenset())
    )

    assert "**Problems**\n\n- T2 reads src/gone.py, which does not exist\n\n" in body


def test_mermaid_draws_a_box_per_task_and_an_arrow_per_dependency() -> None:
    assert mermaid(sample_plan()) == (
        "```mermaid\n"
        "flowchart TD\n"
        '  T1["T1: Add the dial"]\n'
        '  T2["T2: Test the dial"]\n'
        '  T3["T3: Document the dial"]\n'
        "  T1 --> T2\n"
        "  T1 --> T3\n"
        "```"
    )


def test_mermaid_gives_malformed_and_repeated_ids_neutral_names() -> None:
    plan = Plan.model_construct(
        summary="s",
        tasks=[
            task("end", "a", depends_on=[], files=[]),
            task("T2", "b", depends_on=["end", "T9"], files=[]),
            task("T2", "c", depends_on=["T2"], files=[]),
        ],
    )

    assert mermaid(plan).splitlines()[2:-1] == [
        '  task1["end: a"]',
        '  T2["T2: b"]',
        '  task3["T2: c"]',
        "  task1 --> T2",
        "  T2 --> task3",
    ]


def test_the_yaml_section_holds_the_plan_and_reads_back() -> None:
    plan = sample_plan()
    body = rendered(plan)

    assert f"```yaml\n{plan_yaml(plan)}```\n\n</details>" in body
    assert parse_plan_yaml(plan_yaml(plan)) == plan


def test_plan_yaml_keeps_the_schema_key_order_and_writes_multi_line_text_as_a_block() -> None:
    plan = Plan(
        summary="Two lines:\nthe second.",
        tasks=[task("T1", "Add the dial", depends_on=[], files=["src/dial.py"])],
    )

    assert plan_yaml(plan) == (
        "summary: |-\n"
        "  Two lines:\n"
        "  the second.\n"
        "tasks:\n"
        "- id: T1\n"
        "  title: Add the dial\n"
        "  role: implementer\n"
        "  description: what and why\n"
        "  depends_on: []\n"
        "  files:\n"
        "  - src/dial.py\n"
        "  context_files: []\n"
        "  acceptance: the tests pass\n"
    )


def test_a_hostile_title_is_inert_everywhere() -> None:
    plan = sample_plan(HOSTILE_TITLE)
    plan.summary = "Ping @alice <!-- baton:run:7 --> and @org/team."

    body = rendered(plan)

    assert "| T1 | implementer | \\| @&#8205;alice &lt;!-- x --&gt; \\`\\`\\` | — |" in body
    assert '  T1["T1: #124; #64;alice #60;!-- x --#62; #96;#96;#96;"]\n' in body
    assert "Ping @&#8205;alice &lt;!-- baton:run:7 --&gt; and @&#8205;org/team.\n" in body
    assert "````yaml\n" in body  # a longer fence than the title's backticks
    assert "\n````\n\n</details>" in body
    assert "<!--" not in body
    assert "@alice" not in body.split("````yaml")[0]


@pytest.mark.parametrize(
    ("text", "markdown"),
    [
        ("a | b", "a \\| b"),
        ("line one\nline two", "line one line two"),
        ("<b>bold</b>", "&lt;b&gt;bold&lt;/b&gt;"),
        ("<!-- hidden -->", "&lt;!-- hidden --&gt;"),
        ("`code`", "\\`code\\`"),
        ("@alice", "@&#8205;alice"),
        ("fixes #123", "fixes #123"),
        ("*bold* _it_ ~gone~", "\\*bold\\* \\_it\\_ \\~gone\\~"),
        ("[link](https://example.com)", "\\[link\\](https://example.com)"),
        ("&amp;", "&amp;amp;"),
        ("back\\slash", "back\\\\slash"),
        ("# heading", "\\# heading"),
        ("- item", "\\- item"),
        ("1. item", "1\\. item"),
        ("1-2 tasks", "1-2 tasks"),
    ],
    ids=[
        "pipe",
        "newline",
        "html",
        "html comment",
        "backticks",
        "mention",
        "issue reference kept",
        "emphasis",
        "link",
        "entity",
        "backslash",
        "heading",
        "list item",
        "ordered list item",
        "digits without markup",
    ],
)
def test_markdown_text_is_inert(text: str, markdown: str) -> None:
    assert markdown_text(text) == markdown


def test_long_titles_are_cut_in_the_graph_but_whole_in_the_table() -> None:
    title = 'A "quoted" title that is rather long and goes on and on beyond sixty characters'
    body = rendered(sample_plan(title))

    assert '  T1["T1: A #quot;quoted#quot; title that is rather long and goes on and on…"]' in body
    assert f"| T1 | implementer | {title} |" in body


def test_estimate_cost_counts_one_attempt_and_one_review_per_task() -> None:
    prices = PriceTable({"local/worker": Price(1.0, 10.0), "local/boss": Price(10.0, 100.0)})

    # Worker: 15k input at $1, 45k cache reads at $0.10, 6k output at $10 per million tokens.
    # Review: 15k input at $10, 1.5k output at $100 per million tokens.
    per_task = (15_000 * 1.0 + 45_000 * 0.1 + 6_000 * 10.0 + 15_000 * 10.0 + 1_500 * 100.0) / 1e6

    assert estimate_cost(sample_plan(), prices, "local/worker", "local/boss") == pytest.approx(
        3 * per_task
    )


@pytest.mark.parametrize(
    ("worker", "orchestrator"),
    [("openai/x", ORCHESTRATOR), (WORKER, "openai/x")],
    ids=["worker", "orchestrator"],
)
def test_estimate_cost_is_none_when_a_price_is_unknown(worker: str, orchestrator: str) -> None:
    assert estimate_cost(sample_plan(), PriceTable(), worker, orchestrator) is None
    assert unpriced_models(PriceTable(), worker, orchestrator) == ("openai/x",)


@pytest.mark.parametrize(
    ("estimated_usd", "unpriced", "text"),
    [
        (0.4249, (), "about $0.42"),
        (1234.5, (), "about $1,234.50"),
        (0.004, (), "less than $0.01"),
        (None, ("openai/x",), "unknown (no price for openai/x)"),
        (None, ("openai/x", "local/y"), "unknown (no price for openai/x, local/y)"),
        (None, (), "unknown"),
    ],
    ids=["cents", "thousands", "under a cent", "one unpriced", "two unpriced", "no reason"],
)
def test_cost_text(estimated_usd: float | None, unpriced: tuple[str, ...], text: str) -> None:
    assert cost_text(estimated_usd, unpriced) == text


def test_an_unknown_cost_names_the_model_in_the_body() -> None:
    body = render_plan(
        sample_plan(),
        revision=1,
        check=PlanCheck((), (), frozenset()),
        estimated_usd=None,
        commands=[],
        heading="Plan r1",
        unpriced_models=["openai/x"],
    )

    assert "**Estimated cost:** unknown (no price for openai/x)\n" in body
    assert "**Commands**" not in body


@pytest.mark.parametrize(
    ("own", "unpriced", "line"),
    [
        (
            BudgetLimits(),
            False,
            "**Budget:** $20.00 per run and $5.00 per task (Baton's defaults).",
        ),
        (
            BudgetLimits(run_usd=3.0, task_usd=1.0, task_tokens=400_000),
            False,
            "**Budget:** $3.00 per run, $1.00 per task and 400,000 tokens per task (this "
            "repository's `.github/baton.yml`).",
        ),
        (
            BudgetLimits(task_usd=0.5),
            True,
            "**Budget:** $0.50 per task (this repository's `.github/baton.yml`); $20.00 per run "
            "(Baton's default). Calls to a model of unknown price count against no dollar limit.",
        ),
    ],
    ids=["defaults", "repository", "both-and-unknown-price"],
)
def test_the_budget_line_names_each_limit_and_whose_it_is(
    own: BudgetLimits, unpriced: bool, line: str
) -> None:
    assert budget_line(own.with_defaults(INSTANCE_DEFAULTS), unpriced=unpriced) == line


def test_the_budget_that_applies_is_shown_under_the_estimated_cost() -> None:
    body = render_plan(
        sample_plan(),
        revision=1,
        check=PlanCheck((), (), frozenset()),
        estimated_usd=0.42,
        commands=COMMANDS,
        heading="Plan r1",
        budget=BudgetLimits(run_usd=3.0).with_defaults(INSTANCE_DEFAULTS),
    )

    assert (
        "another\n\n**Budget:** $3.00 per run (this repository's `.github/baton.yml`); "
        "$5.00 per task (Baton's default).\n\n<details><summary>Plan as YAML (r1)"
    ) in body


def test_the_plan_shows_its_time_and_one_agents_time_and_cost_beside_its_own() -> None:
    body = render_plan(
        sample_plan(),
        revision=1,
        check=PlanCheck((), (), frozenset()),
        estimated_usd=0.42,
        commands=COMMANDS,
        heading="Plan r1",
        single_usd=0.3,
    )

    # T1 then T3 is the longest chain (1 + 1); T2's effort 2 counts half a medium task, so one
    # agent doing all three in turn takes 1 + 0.5 + 1.
    assert (
        "**Estimated cost:** about $0.42 (one worker attempt and one review per task)\n\n"
        "**Estimated time:** 2 task-lengths along its longest chain (a medium task is 1)\n\n"
        "**One agent instead** (`/approve-plan single`): about $0.30 (one attempt and one review)"
        " and 2.5 task-lengths, one task after another\n\n"
    ) in body


def test_one_agents_cost_is_every_tasks_attempt_and_a_single_review() -> None:
    prices = PriceTable({"local/worker": Price(1.0, 10.0), "local/boss": Price(10.0, 100.0)})
    worker, orchestrator = "local/worker", "local/boss"
    plan = sample_plan()
    per_attempt = Price(1.0, 10.0).cost(WORKER_ATTEMPT)
    per_review = Price(10.0, 100.0).cost(REVIEW)

    assert single_agent_cost(plan, prices, worker, orchestrator) == pytest.approx(
        3 * per_attempt + per_review
    )
    assert estimate_cost(plan, prices, worker, orchestrator) == pytest.approx(
        3 * (per_attempt + per_review)
    )
    assert single_agent_cost(plan, prices, "local/unknown", orchestrator) is None


def test_render_problems_lists_every_error() -> None:
    assert render_problems(
        "The plan stayed invalid, so the run ends",
        ["T4 depends on T9, which is not in the plan", "T2 writes <b>@bob</b>"],
    ) == (
        "## The plan stayed invalid, so the run ends\n\n"
        "- T4 depends on T9, which is not in the plan\n"
        "- T2 writes &lt;b&gt;@&#8205;bob&lt;/b&gt;\n"
    )


def test_rendering_is_deterministic() -> None:
    assert rendered(sample_plan(HOSTILE_TITLE)) == rendered(sample_plan(HOSTILE_TITLE))


def test_a_long_summary_is_shown_whole() -> None:
    summary = "This paragraph says a great deal about the dial. " * 200  # 10,000 characters
    plan = sample_plan().model_copy(update={"summary": summary})

    assert markdown_text(summary) in rendered(plan)


def test_a_plan_just_within_the_limit_is_shown_whole_within_githubs_limit() -> None:
    wordy = sample_plan().model_copy(
        update={
            "tasks": [
                step.model_copy(update={"description": "Explain. " * 2195})
                for step in sample_plan().tasks
            ]
        }
    )
    check = PlanCheck((), (), frozenset())
    assert plan_length_problem(wordy, check) is None

    body = render_plan(
        wordy,
        revision=12,
        check=check,
        estimated_usd=None,
        commands=COMMANDS,
        heading="Plan r12 — waiting for approval",
        unpriced_models=["openai/" + "m" * 900, "anthropic/" + "n" * 900],
        budget=BudgetLimits(task_tokens=400_000).with_defaults(INSTANCE_DEFAULTS),
    )

    assert len(body) <= GITHUB_BODY_CHARS - MARKER_ROOM
    assert parse_plan_yaml(body.split("```yaml\n", 1)[1].split("\n```", 1)[0]) == wordy
    assert LEFT_OUT not in body


def test_a_plan_too_long_for_one_comment_is_a_problem_naming_both_lengths() -> None:
    longer = sample_plan().model_copy(
        update={
            "tasks": [
                step.model_copy(update={"acceptance": "Check it. " * 2500})
                for step in sample_plan().tasks
            ]
        }
    )

    problem = plan_length_problem(longer, PlanCheck((), (), frozenset()))

    assert problem is not None
    assert problem.startswith("the plan renders to 7")
    assert f"GitHub shows at most {PLAN_COMMENT_CHARS:,} in a comment" in problem
    assert "shorten descriptions" in problem
