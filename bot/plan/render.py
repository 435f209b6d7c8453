"""A plan revision as GitHub-flavoured Markdown: the status comment's body, YAML and Mermaid.

Plan text comes from a model that read untrusted issue text, so everything it wrote is escaped
before it reaches the comment: it cannot add markup, ping anyone, or open an HTML comment (the
status comment is found again by one). Output depends on the inputs alone, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml

from bot.llm.pricing import PriceTable
from bot.llm.types import Usage
from bot.plan.schema import Plan
from bot.plan.validate import TASK_ID, PlanCheck

# One worker attempt: an agent loop resends its growing context on every turn, so most of its
# roughly 60k input tokens come back from the provider's prompt cache.
WORKER_ATTEMPT = Usage(input_tokens=15_000, cache_read_tokens=45_000, output_tokens=6_000)
# One review: the orchestrator reads the task, its diff and the test results once.
REVIEW = Usage(input_tokens=15_000, output_tokens=1_500)
MERMAID_LABEL_CHARS = 60  # longer labels make boxes too wide to read
GATE_TEXT = "needs /approve-task"

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
) -> str:
    """The status comment body for plan revision `revision`: heading, summary, task table,
    problems and warnings when there are any, the graph, the estimated cost (`unpriced_models`
    say why it is unknown), the plan as YAML, and `commands`, the ones that apply now."""
    sections = [
        f"## {markdown_text(heading)}",
        markdown_text(plan.summary),
        _task_table(plan, check.gated),
        _bullets("Problems", check.errors),
        _bullets("Warnings", check.warnings),
        mermaid(plan),
        _cost_line(estimated_usd, unpriced_models),
        _yaml_details(plan, revision),
        _command_list(commands),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def render_problems(title: str, errors: Sequence[str]) -> str:
    """A heading and every error as a list item, escaped like plan text."""
    return f"## {markdown_text(title)}\n\n{_items(errors)}\n"


def mermaid(plan: Plan) -> str:
    """A fenced Mermaid flowchart: one box per task, an arrow from each task to those waiting
    for it. Ids that are malformed or repeated get a neutral node name; unknown ids no arrow."""
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
    lines.append("```")
    return "\n".join(lines)


def plan_yaml(plan: Plan) -> str:
    """The plan as YAML, keys in schema order; `parse_plan_yaml` reads it back to an equal plan."""
    data = plan.model_dump()
    for task in data["tasks"]:
        if not task["addresses"]:
            del task["addresses"]  # only revisions from a pull request review use it
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


def _task_table(plan: Plan, gated: frozenset[str]) -> str:
    rows = [
        "| Task | Role | Title | Depends on | Files | Gate |",
        "|---|---|---|---|---|---|",
    ]
    for task in plan.tasks:
        cells = [
            markdown_text(task.id),
            markdown_text(task.role),
            markdown_text(task.title),
            ", ".join(markdown_text(dep) for dep in task.depends_on) or "—",
            "<br>".join(markdown_text(path) for path in task.files) or "—",
            GATE_TEXT if task.id in gated else "",
        ]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def _cost_line(estimated_usd: float | None, unpriced: Sequence[str]) -> str:
    what = " (one worker attempt and one review per task)" if estimated_usd is not None else ""
    return f"**Estimated cost:** {markdown_text(cost_text(estimated_usd, unpriced))}{what}"


def _bullets(label: str, messages: Sequence[str]) -> str:
    return f"**{label}**\n\n{_items(messages)}" if messages else ""


def _items(messages: Sequence[str]) -> str:
    return "\n".join(f"- {markdown_text(message)}" for message in messages)


def _yaml_details(plan: Plan, revision: int) -> str:
    return "\n".join(
        [
            f"<details><summary>Plan as YAML (r{revision})</summary>",
            "",
            fenced("yaml", plan_yaml(plan)),
            "",
            "</details>",
        ]
    )


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
