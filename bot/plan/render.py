"""A plan as GitHub-flavoured Markdown: the status comment while it is proposed and while it is
carried out, and the draft pull request's body, with YAML and Mermaid.

Plan text comes from a model that read untrusted issue text, so everything it wrote is escaped
before it reaches a comment, and what a worker wrote is fenced: it cannot add markup, ping anyone,
or open an HTML comment (the status comment is found again by one). Output depends on the inputs
alone, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import yaml

from bot.github.untrusted import capped, prepare_untrusted
from bot.llm.budget import BudgetLimits
from bot.llm.pricing import PriceTable
from bot.llm.types import Usage
from bot.plan.schema import Plan
from bot.plan.validate import TASK_ID, PlanCheck
from bot.scheduler import TaskView, effort_estimate, remaining_path

# One worker attempt: an agent loop resends its growing context on every turn, so most of its
# roughly 60k input tokens come back from the provider's prompt cache.
WORKER_ATTEMPT = Usage(input_tokens=15_000, cache_read_tokens=45_000, output_tokens=6_000)
# One review: the orchestrator reads the task, its diff and the test results once.
REVIEW = Usage(input_tokens=15_000, output_tokens=1_500)
MERMAID_LABEL_CHARS = 60  # longer labels make boxes too wide to read
GATE_TEXT = "needs /approve-task"
TEST_OUTPUT_CHARS = 3000  # the tail of the test run: where the failures are
FINDINGS_CHARS = 4000  # per task, so a talkative analyst cannot fill the body
CHECKED_STATES = frozenset({"accepted", "integrated"})  # the task's work is done and accepted
GITHUB_BODY_CHARS = 65_536  # GitHub refuses a longer comment or pull request body
MARKER_ROOM = 256  # for the hidden marker the GitHub client adds to a comment
SUMMARY_CHARS = 4_000  # in a run's status and pull request: more is cut, with a note
# Around the plan in its status comment: the heading, the cost and budget lines, the commands.
PLAN_FRAME_CHARS = 2_500
PLAN_COMMENT_CHARS = GITHUB_BODY_CHARS - MARKER_ROOM - PLAN_FRAME_CHARS
LEFT_OUT = "_Left out here to stay within GitHub's size limit; Baton's run record has it all._"
# Graph colours per task state (GitHub's own palette); a state not listed keeps the default.
_STATE_STYLES = {
    "running": "fill:#ddf4ff,stroke:#0969da",
    "reviewing": "fill:#ddf4ff,stroke:#0969da",
    "awaiting_approval": "fill:#fff8c5,stroke:#9a6700",
    "accepted": "fill:#dafbe1,stroke:#1a7f37",
    "integrated": "fill:#dafbe1,stroke:#1a7f37",
    "escalated": "fill:#ffebe9,stroke:#cf222e",
    "failed": "fill:#ffebe9,stroke:#cf222e",
    "skipped": "fill:#eaeef2,stroke:#8c959f",
    "cancelled": "fill:#eaeef2,stroke:#8c959f",
}

# In Mermaid labels these break the syntax, become markup or look like a mention; Mermaid reads
# `#name;` and `#123;` as entities.
_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#38;",
    "<": "#60;",
    ">": "#62;",
    "`": "#96;",
    "|": "#124;",
    "@": "#64;",
}
# Markdown punctuation that could format, link or break a table; escaped with a backslash.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~])")
# At the start of a line these make a heading, a list item or a rule.
_LINE_START_MARKUP = re.compile(r"^(\d*)((?<=\d)[.)]|(?<!\d)[#=+-])")
_ZERO_WIDTH_JOINER = "&#8205;"  # after `@`, it keeps a mention from pinging anyone
_COMMENT_OPENER = "<!--"


def render_plan(
    plan: Plan,
    *,
    revision: int,
    check: PlanCheck,
    estimated_usd: float | None,
    commands: Sequence[str],
    heading: str,
    unpriced_models: Sequence[str] = (),
    budget: BudgetLimits | None = None,
    single_usd: float | None = None,
) -> str:
    """The status comment body for plan revision `revision`: heading, summary, task table,
    problems and warnings when there are any, the graph, the estimated cost (`unpriced_models`
    say why it is unknown) and time, beside them one agent's (`single_usd`), the `budget` that
    applies and where each limit comes from, the plan as YAML, and `commands`, the ones that
    apply now.

    Only the graph may be left out for length: a plan that `plan_length_problem` accepts is
    shown whole, so what a person approves is what the workers get."""
    summary, table, warnings, plan_as_yaml = _plan_sections(plan, check, f"r{revision}")
    sections: list[str | Droppable] = [
        f"## {markdown_text(heading)}",
        summary,
        table,
        _bullets("Problems", check.errors),
        warnings,
        Droppable(mermaid(plan), 2),
        _cost_line(estimated_usd, unpriced_models),
        _time_line(time_estimate(plan)),
        _single_agent_line(time_estimate(plan), single_usd),
        budget_line(budget, unpriced=bool(unpriced_models)) if budget is not None else "",
        plan_as_yaml,
        _command_list(commands),
    ]
    return within_github_limit(sections)


def plan_length_problem(plan: Plan, check: PlanCheck) -> str | None:
    """Why `plan` cannot be shown whole in its status comment, for the planner to repair or a
    person to read; None when its summary, table, warnings and YAML fit in
    `PLAN_COMMENT_CHARS`, which leaves room for the heading, cost and budget lines and commands."""
    length = len(_joined(_plan_sections(plan, check, "r999")))
    if length <= PLAN_COMMENT_CHARS:
        return None
    return (
        f"the plan renders to {length:,} characters; GitHub shows at most "
        f"{PLAN_COMMENT_CHARS:,} in a comment: shorten descriptions, acceptance lines or the "
        "summary, or use fewer tasks"
    )


def _plan_sections(plan: Plan, check: PlanCheck, revisions: str) -> tuple[str, str, str, str]:
    """What carries the plan in its status comment: summary, table, warnings and YAML."""
    return (
        markdown_text(plan.summary),
        _plan_table(plan, check.gated),
        _bullets("Warnings", check.warnings),
        _yaml_details(plan, revisions),
    )


def render_problems(title: str, errors: Sequence[str]) -> str:
    """A heading and every error as a list item, escaped like plan text."""
    return f"## {markdown_text(title)}\n\n{_items(errors)}\n"


@dataclass(frozen=True)
class TaskProgress:
    """One task of a run as it stands: its state, the model its attempts used, what it spent."""

    key: str
    title: str
    state: str
    role: str
    model: str
    tokens: int
    usd: float
    attempts: int


@dataclass(frozen=True)
class RunProgress:
    """The plan a run carries out (its approved revisions as one) and how far it has come.
    `unpriced_calls` counts model calls of unknown price, which add nothing to `usd`."""

    plan: Plan
    revisions: Sequence[int]
    tasks: Sequence[TaskProgress]
    tokens: int
    usd: float
    unpriced_calls: int = 0
    worked_by: str = ""  # `mode_text`; empty leaves the line out

    @property
    def states(self) -> dict[str, str]:
        return {task.key: task.state for task in self.tasks}


@dataclass(frozen=True)
class Finding:
    """What a static analyst reported when its task was accepted: model text, shown fenced."""

    key: str
    title: str
    text: str


def render_status(heading: str, progress: RunProgress) -> str:
    """The status comment while the plan is carried out and after: `heading`, the plan's summary,
    a checklist of the tasks and their states, the graph coloured by state, the per-task table
    and the cost so far."""
    sections: list[str | Droppable] = [
        heading,
        f"### Plan ({_revision_label(progress.revisions)})",
        _paragraphs(progress.plan.summary),
        task_checklist(progress.tasks),
        Droppable(mermaid(progress.plan, progress.states), 2),
        task_table(progress.tasks),
        _worked_by(progress),
        f"**Cost so far:** {spend_text(progress)}",
    ]
    return within_github_limit(sections)


def render_pull_request(
    issue_number: int,
    progress: RunProgress,
    findings: Sequence[Finding],
    *,
    tests_passed: bool,
    test_output: str | None,
    template: str | None = None,
) -> str:
    """The draft pull request's body: the repository's pull request template when it has one,
    then the issue it closes, the final plan (summary, graph and YAML), the per-task table and
    cost, the static analysts' findings and the test results."""
    skipped = [task.key for task in progress.tasks if task.state == "skipped"]
    # The template is the repository's own words for its pull requests, as GitHub would show it.
    above = [template.strip(), "---"] if template and template.strip() else []
    sections: list[str | Droppable] = [
        *above,
        f"Closes #{issue_number}.",
        "## Plan",
        _paragraphs(progress.plan.summary),
        Droppable(mermaid(progress.plan, progress.states), 2),
        Droppable(_yaml_details(progress.plan, _revision_label(progress.revisions)), 3),
        "## Tasks",
        task_table(progress.tasks),
        f"**Skipped by a person:** {_keys(skipped)}" if skipped else "",
        _worked_by(progress),
        f"**Cost:** {spend_text(progress)}",
        Droppable(_findings(findings), 1),
        "## Tests",
        "Tests on the branch: " + ("passed" if tests_passed else "failed"),
        # Test output is text the workers' code printed: fenced so it stays inert.
        fenced("", test_output[-TEST_OUTPUT_CHARS:]) if test_output is not None else "",
    ]
    return within_github_limit(sections)


_MODE_WORDS = {
    "orchestrated": "the plan's tasks, several workers at once where they are independent",
    "single": "one agent with the whole issue",
}
_MODE_REASONS = {
    "config": "the repository's `mode` setting",
    "command": "asked with `/approve-plan single`",
    "auto": "`mode: auto`, and the plan is a chain",
    "baseline": "drawn at random for comparison (`baseline_share`)",
}


def mode_text(mode: str, reason: str) -> str:
    """Who works the run, and why, in words: `one agent with the whole issue (asked with …)`."""
    words = _MODE_WORDS.get(mode, mode)
    why = _MODE_REASONS.get(reason)
    return f"{words} ({why})" if why else words


def _worked_by(progress: RunProgress) -> str:
    return f"**Worked by:** {progress.worked_by}" if progress.worked_by else ""


@dataclass(frozen=True)
class Droppable:
    """A section that may be left out when the whole is too long; higher `rank` goes first."""

    text: str
    rank: int


def within_github_limit(
    sections: Sequence[str | Droppable], limit: int = GITHUB_BODY_CHARS - MARKER_ROOM
) -> str:
    """The non-empty sections joined by blank lines. While that is longer than `limit`, the
    droppable section of the highest rank is replaced by `LEFT_OUT`; if that is not enough
    (a huge summary), the text is cut at a line end and `LEFT_OUT` added."""
    parts = list(sections)
    while len(text := _joined(parts)) > limit:
        ranked = [(part.rank, n) for n, part in enumerate(parts) if isinstance(part, Droppable)]
        if not ranked:
            cut = text[: limit - len(LEFT_OUT) - 2]
            return cut[: cut.rfind("\n") + 1 or len(cut)] + "\n" + LEFT_OUT + "\n"
        parts[max(ranked)[1]] = LEFT_OUT
    return text


def _joined(parts: Sequence[str | Droppable]) -> str:
    texts = (part.text if isinstance(part, Droppable) else part for part in parts)
    return "\n\n".join(text for text in texts if text) + "\n"


def task_checklist(tasks: Sequence[TaskProgress]) -> str:
    """A Markdown task list: each task's id, title and state, checked once its work is in."""
    return "\n".join(
        f"- [{'x' if task.state in CHECKED_STATES else ' '}] **{markdown_text(task.key)}** "
        f"{markdown_text(task.title)} — {markdown_text(task.state.replace('_', ' '))}"
        for task in tasks
    )


def task_table(tasks: Sequence[TaskProgress]) -> str:
    """One row per task: role, model, tokens, dollars and attempts."""
    rows = [
        "| Task | Role | Model | Tokens | Cost | Attempts |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        cells = [
            markdown_text(task.key),
            markdown_text(task.role),
            markdown_text(task.model),
            f"{task.tokens:,}",
            f"${task.usd:,.4f}",
            str(task.attempts),
        ]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def spend_text(progress: RunProgress) -> str:
    """`$0.0421 · 12,345 tokens`, saying so when some calls had no known price."""
    text = f"${progress.usd:,.4f} · {progress.tokens:,} tokens"
    if progress.unpriced_calls:
        calls = "call" if progress.unpriced_calls == 1 else "calls"
        text += f" ({progress.unpriced_calls} model {calls} of unknown price not counted)"
    return text


def mermaid(plan: Plan, states: Mapping[str, str] | None = None) -> str:
    """A fenced Mermaid flowchart: one box per task, an arrow from each task to those waiting
    for it, and, given the tasks' `states`, a colour per state. Ids that are malformed or
    repeated get a neutral node name; unknown ids no arrow."""
    nodes = _node_names(plan)
    lines = ["```mermaid", "flowchart TD"]
    lines += [
        f'  {nodes[index]}["{_mermaid_label(task.id, task.title)}"]'
        for index, task in enumerate(plan.tasks)
    ]
    # A repeated id means its first task, as in check_plan.
    first_position = {task.id: index for index, task in reversed(list(enumerate(plan.tasks)))}
    for index, task in enumerate(plan.tasks):
        for dep in dict.fromkeys(task.depends_on):
            if dep in first_position:
                lines.append(f"  {nodes[first_position[dep]]} --> {nodes[index]}")
    lines += _state_classes(plan, nodes, states or {})
    lines.append("```")
    return "\n".join(lines)


def _state_classes(plan: Plan, nodes: Sequence[str], states: Mapping[str, str]) -> list[str]:
    """A `classDef` per state that has a colour, then the boxes of the tasks in that state."""
    members: dict[str, list[str]] = {state: [] for state in _STATE_STYLES}
    for index, task in enumerate(plan.tasks):
        state = states.get(task.id)
        if state in members and nodes[index] not in members[state]:
            members[state].append(nodes[index])
    lines = []
    for state, names in members.items():
        if names:
            lines.append(f"  classDef {state} {_STATE_STYLES[state]}")
            lines.append(f"  class {','.join(names)} {state}")
    return lines


def plan_yaml(plan: Plan) -> str:
    """The plan as YAML, keys in schema order; `parse_plan_yaml` reads it back to an equal plan."""
    data = plan.model_dump()
    for task in data["tasks"]:
        if not task["addresses"]:
            del task["addresses"]  # only revisions from a pull request review use it
        if task["effort"] is None:
            del task["effort"]  # optional: a plan without efforts reads as before
    return yaml.dump(
        data,
        Dumper=_PlanDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def estimate_cost(
    plan: Plan, prices: PriceTable, worker_model: str, orchestrator_model: str
) -> float | None:
    """Rough dollars for the plan: per task one worker attempt and one review. None when either
    model has no known price. Retries and review rounds are not counted."""
    worker, orchestrator = prices.price(worker_model), prices.price(orchestrator_model)
    if worker is None or orchestrator is None:
        return None
    per_task = worker.cost(WORKER_ATTEMPT) + orchestrator.cost(REVIEW)
    return per_task * len(plan.tasks)


class TimeEstimate(NamedTuple):
    """How long a plan takes, in task-lengths (a medium task is 1), with as many workers as it
    can use and with one agent doing every task in turn."""

    parallel: float  # its longest chain of effort
    single: float  # the sum of all its tasks' effort


def time_estimate(plan: Plan) -> TimeEstimate:
    views = [
        TaskView(
            key=task.id,
            state="pending",
            depends_on=tuple(task.depends_on),
            files=(),
            estimate=effort_estimate(task.effort),
        )
        for task in plan.tasks
    ]
    total = sum(view.estimate for view in views)
    try:
        longest = max(remaining_path(views).values())
    except ValueError:
        longest = total  # a cycle cannot run in parallel either
    return TimeEstimate(parallel=longest, single=total)


def single_agent_cost(
    plan: Plan, prices: PriceTable, worker_model: str, orchestrator_model: str
) -> float | None:
    """Rough dollars for one agent doing the whole plan: every task's worker attempt, done in
    one attempt, and a single review. None when either model has no known price."""
    worker, orchestrator = prices.price(worker_model), prices.price(orchestrator_model)
    if worker is None or orchestrator is None:
        return None
    return worker.cost(WORKER_ATTEMPT) * len(plan.tasks) + orchestrator.cost(REVIEW)


def unpriced_models(prices: PriceTable, *models: str) -> tuple[str, ...]:
    """Those of `models` without a known price, each once, in the order given."""
    return tuple(model for model in dict.fromkeys(models) if prices.price(model) is None)


def cost_text(estimated_usd: float | None, unpriced: Sequence[str] = ()) -> str:
    """`about $0.42`, `less than $0.01`, or `unknown (no price for openai/x)`."""
    if estimated_usd is None:
        return f"unknown (no price for {', '.join(unpriced)})" if unpriced else "unknown"
    if estimated_usd < 0.01:
        return "less than $0.01"
    return f"about ${estimated_usd:,.2f}"


def markdown_text(text: str) -> str:
    """`text` as one line of inert Markdown: whitespace collapsed, markup and HTML escaped,
    mentions unable to ping. `#123` references still link."""
    text = " ".join(text.split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    text = text.replace("@", "@" + _ZERO_WIDTH_JOINER)
    return _LINE_START_MARKUP.sub(r"\1\\\2", text)


def _plan_table(plan: Plan, gated: frozenset[str]) -> str:
    rows = [
        "| Task | Role | Title | Depends on | Files | Gate | Effort |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in plan.tasks:
        cells = [
            markdown_text(task.id),
            markdown_text(task.role),
            markdown_text(task.title),
            ", ".join(markdown_text(dep) for dep in task.depends_on) or "—",
            "<br>".join(markdown_text(path) for path in task.files) or "—",
            GATE_TEXT if task.id in gated else "",
            str(task.effort) if task.effort is not None else "—",
        ]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def _cost_line(estimated_usd: float | None, unpriced: Sequence[str]) -> str:
    what = " (one worker attempt and one review per task)" if estimated_usd is not None else ""
    return f"**Estimated cost:** {markdown_text(cost_text(estimated_usd, unpriced))}{what}"


def _time_line(estimate: TimeEstimate) -> str:
    return (
        f"**Estimated time:** {_lengths(estimate.parallel)} along its longest chain "
        "(a medium task is 1)"
    )


def _single_agent_line(estimate: TimeEstimate, single_usd: float | None) -> str:
    # The unpriced models are named once, on the cost line above.
    cost = markdown_text(cost_text(single_usd))
    return (
        f"**One agent instead** (`/approve-plan single`): {cost} (one attempt and one review) "
        f"and {_lengths(estimate.single)}, one task after another"
    )


def _lengths(value: float) -> str:
    shown = f"{value:,.1f}".removesuffix(".0")
    return f"{shown} task-length" + ("" if shown == "1" else "s")


def budget_line(limits: BudgetLimits, *, unpriced: bool = False) -> str:
    """`**Budget:** $20.00 per run and $5.00 per task (Baton's defaults).`: each limit that
    applies, grouped by where it comes from; with `unpriced`, a note that calls to a model of
    unknown price count against no dollar limit."""
    own: list[str] = []
    defaulted: list[str] = []
    for name, text in _limit_texts(limits):
        (defaulted if name in limits.defaults else own).append(text)
    parts = []
    if own:
        parts.append(f"{_listed(own)} (this repository's `.github/baton.yml`)")
    if defaulted:
        parts.append(f"{_listed(defaulted)} (Baton's default{'s' if len(defaulted) > 1 else ''})")
    line = f"**Budget:** {'; '.join(parts) or 'none'}."
    if unpriced:
        line += " Calls to a model of unknown price count against no dollar limit."
    return line


def _listed(items: Sequence[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def _limit_texts(limits: BudgetLimits) -> list[tuple[str, str]]:
    """Each limit that applies, by name, as a person reads it."""
    texts = []
    if limits.run_usd is not None:
        texts.append(("run_usd", f"${limits.run_usd:,.2f} per run"))
    if limits.task_usd is not None:
        texts.append(("task_usd", f"${limits.task_usd:,.2f} per task"))
    if limits.task_tokens is not None:
        texts.append(("task_tokens", f"{limits.task_tokens:,} tokens per task"))
    return texts


def _bullets(label: str, messages: Sequence[str]) -> str:
    return f"**{label}**\n\n{_items(messages)}" if messages else ""


def _items(messages: Sequence[str]) -> str:
    return "\n".join(f"- {markdown_text(message)}" for message in messages)


def _yaml_details(plan: Plan, revisions: str) -> str:
    return "\n".join(
        [
            f"<details><summary>Plan as YAML ({revisions})</summary>",
            "",
            fenced("yaml", plan_yaml(plan)),
            "",
            "</details>",
        ]
    )


def _findings(findings: Sequence[Finding]) -> str:
    """Each static analyst's report under its task, fenced: it is model text, shown verbatim."""
    if not findings:
        return ""
    parts = ["## Findings"]
    for finding in findings:
        parts.append(f"**{markdown_text(finding.key)}** {markdown_text(finding.title)}")
        # Shown in a code block, so as written: only invisible characters go.
        text = prepare_untrusted(finding.text, FINDINGS_CHARS, markdown=False)
        parts.append(fenced("", text))
    return "\n\n".join(parts)


def _paragraphs(text: str) -> str:
    """Text with its paragraphs kept apart, each one line of inert Markdown, cut to
    `SUMMARY_CHARS` so that a long one cannot push the tables out of a body."""
    paragraphs = (markdown_text(part) for part in re.split(r"\n\s*\n", capped(text, SUMMARY_CHARS)))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


def _revision_label(revisions: Sequence[int]) -> str:
    return ", ".join(f"r{number}" for number in revisions)


def _keys(keys: Sequence[str]) -> str:
    return ", ".join(markdown_text(key) for key in keys)


def fenced(language: str, text: str) -> str:
    # A fence longer than any run of backticks inside cannot be closed by the text.
    longest_run = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest_run + 1)
    # Shown verbatim, but the raw body must not hold a comment opener like the status marker.
    body = text.replace(_COMMENT_OPENER, "<\u200b!--").rstrip("\n")
    return f"{fence}{language}\n{body}\n{fence}"


def _command_list(commands: Sequence[str]) -> str:
    if not commands:
        return ""
    return "**Commands**\n\n" + "\n".join(f"- `{command}`" for command in commands)


def _node_names(plan: Plan) -> list[str]:
    names: list[str] = []
    for index, task in enumerate(plan.tasks):
        fit = TASK_ID.fullmatch(task.id) and task.id not in names
        names.append(task.id if fit else f"task{index + 1}")
    return names


def _mermaid_label(task_id: str, title: str) -> str:
    label = " ".join(f"{task_id}: {title}".split())
    if len(label) > MERMAID_LABEL_CHARS:
        label = label[: MERMAID_LABEL_CHARS - 1] + "…"
    return "".join(_MERMAID_ESCAPES.get(char, char) for char in label)


class _PlanDumper(yaml.SafeDumper):
    """Safe YAML with multi-line text as `|` blocks, easy to edit for `/edit-plan`."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # PyYAML reads these line breaks back wrongly unless they are escaped in double quotes.
    style = '"' if any(char in text for char in _UNICODE_LINE_BREAKS) else None
    if style is None and "\n" in text:
        style = "|"  # the emitter falls back to quotes when a block cannot hold the text
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_UNICODE_LINE_BREAKS = "\x85\u2028\u2029"
_PlanDumper.add_representer(str, _represent_text)
