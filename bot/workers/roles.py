"""The four worker roles: what each is asked to do, which tools it gets, which model tier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from bot.codebase.instructions import instructions_text
from bot.codebase.snapshot import CommittedFile
from bot.github.untrusted import UNTRUSTED_RULE, UntrustedFence
from bot.plan.schema import PlanTask

READ_TOOLS = frozenset({"list_files", "read_file", "search", "list_symbols"})
EDIT_TOOLS = frozenset({"apply_patch", "write_file", "delete_file"})
RUN_TOOLS = frozenset({"run_tests", "run_command", "run_linter"})
CONTEXT_TOOLS = frozenset({"get_ticket", "list_open_prs"})


class FinishInput(BaseModel):
    """What a worker says when it is done (CONTRACT §6 `finish`)."""

    summary: str = Field(min_length=1, description="what changed and why, for the reviewer")
    confidence: float = Field(ge=0.0, le=1.0, description="how sure you are the task is done")
    notes: str | None = Field(default=None, description="anything the reviewer should know")


@dataclass(frozen=True)
class Role:
    name: str
    duty: str
    tools: frozenset[str]

    @property
    def writes(self) -> bool:
        return bool(self.tools & EDIT_TOOLS)


ROLES: Mapping[str, Role] = {
    "implementer": Role(
        "implementer",
        "You change the code so the task's acceptance line holds, and keep the tests passing.",
        READ_TOOLS | EDIT_TOOLS | RUN_TOOLS | CONTEXT_TOOLS,
    ),
    "test_writer": Role(
        "test_writer",
        "You add or change tests that show the task's behaviour; they must pass on this code.",
        READ_TOOLS | EDIT_TOOLS | RUN_TOOLS | CONTEXT_TOOLS,
    ),
    "refactorer": Role(
        "refactorer",
        "You restructure the code without changing what it does; the tests must pass before "
        "and after.",
        READ_TOOLS | EDIT_TOOLS | RUN_TOOLS | CONTEXT_TOOLS,
    ),
    "static_analyst": Role(
        "static_analyst",
        "You read the code and run the linter, and report findings; you change no file.",
        READ_TOOLS | frozenset({"run_linter"}) | CONTEXT_TOOLS,
    ),
}

WORKER_SYSTEM = (
    """\
You are a {role} worker of Baton. {duty}

Work on exactly one task of an approved plan, in a git checkout of the repository. Paths are
relative to the repository root. Before any edit, write a plan of two to five bullet points
("- ...") in your first reply. Touch only the files of your write set; if something outside it
needs changing, finish and say so in notes. Run the tests before you finish. Finish by calling
finish with a summary, your confidence between 0 and 1, and notes for the reviewer.

"""
    + UNTRUSTED_RULE
    + "\n"
)


def system_prompt(role: Role) -> str:
    return WORKER_SYSTEM.format(role=role.name.replace("_", " "), duty=role.duty)


def task_prompt(
    task: PlanTask,
    context_files: Mapping[str, str],
    instructions: Sequence[CommittedFile],
    feedback: str | None = None,
) -> str:
    """The task as a person approved it, its acceptance line and write set; then, fenced as
    untrusted text, its context files, the repository's instructions (named as such, never as
    the request) and the reviewer's feedback (the reviewer read the worker's output, so its
    words may carry what that output said)."""
    fence = UntrustedFence()
    parts = [
        f"Task {task.id}: {task.title}",
        task.description,
        f"Acceptance: {task.acceptance}",
        "Files you may write: " + (", ".join(task.files) or "none"),
    ]
    parts += [
        fence.wrap("context-file", content, path=path) for path, content in context_files.items()
    ]
    if instructions:
        parts.append(instructions_text(instructions, fence))
    if feedback:
        parts += [
            "The reviewer sent your previous attempt back:",
            fence.wrap("review-feedback", feedback),
        ]
    return "\n".join(parts)


def work_plan(first_reply: str) -> list[str]:
    """The bullet points of the worker's first reply, kept as the attempt's plan."""
    return [line.strip()[2:].strip() for line in first_reply.splitlines() if _bullet(line)][:5]


def _bullet(line: str) -> bool:
    return line.strip().startswith(("- ", "* "))
