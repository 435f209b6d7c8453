"""Slash commands in an issue comment (CONTRACT §5), read the way a person reads the comment.

A command is a line whose first text is `/name` followed by a space or the end of the line. Lines
inside fenced code blocks, quoted lines (`> /approve-plan` in a reply) and HTML comments are not
read as commands, since the person is showing or quoting a command, not giving one. A `/word`
that names no command (`/lgtm`, `/usr/bin`) is ordinary text.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple

COMMAND_NAMES = (
    "approve-plan",
    "revise-plan",
    "edit-plan",
    "approve-task",
    "retry",
    "skip",
    "cancel",
)
TASK_COMMANDS = ("approve-task", "retry", "skip")
# The fence languages `/edit-plan` reads as the plan; "" is a fence with no language.
PLAN_LANGUAGES = ("yaml", "yml", "")
# Words echoed back in an error are cut to this many characters.
SHOWN_CHARACTERS = 40

_COMMAND_LINE = re.compile(r"\s*/(?P<name>\S+)(?P<rest>\s.*)?")
_FENCE_OPENING = re.compile(r"(?P<indent>\s*)(?P<marks>`{3,}|~{3,})(?P<info>.*)")
_FENCE_CLOSING = re.compile(r"\s*(?P<marks>`{3,}|~{3,})\s*")
# Digits are capped so that a pasted wall of digits is a clear error, not a huge integer.
_REVISION = re.compile(r"[rR](?P<number>\d{1,9})")
_TASK_ID = re.compile(r"[tT](?P<number>\d{1,9})")


class Command(NamedTuple):
    """One command and its arguments, already normalised (`r2` -> 2, `t3` -> `T3`)."""

    name: str
    revision: int | None = None
    task_id: str | None = None
    text: str = ""
    plan_yaml: str | None = None


class CommandError(ValueError):
    """A command with arguments it cannot take; the message says what it needs, for a reply."""


class _Kind(Enum):
    TEXT = "text"
    QUOTE = "quote"
    HIDDEN = "hidden"
    FENCE_OPEN = "fence open"
    CODE = "code"
    FENCE_CLOSE = "fence close"


class _Fence(NamedTuple):
    marks: str
    language: str
    indent: int


def parse_command(body: str) -> Command | None:
    """The first command in the comment `body`, or None when it gives none.

    Raises CommandError when that first command's arguments are wrong; later lines never rescue it.
    """
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kinds = _line_kinds(lines)
    commands = _command_lines(lines, kinds)
    if not commands:
        return None
    first, match = commands[0]
    # A command's own lines run to the next command: its feedback, or where its plan is.
    region_end = commands[1][0] if len(commands) > 1 else len(lines)
    words = (match["rest"] or "").split()
    return _build(match["name"].lower(), words, lines, kinds, range(first + 1, region_end))


def _command_lines(lines: list[str], kinds: list[_Kind]) -> list[tuple[int, re.Match[str]]]:
    commands = []
    for index, (line, kind) in enumerate(zip(lines, kinds, strict=True)):
        match = _COMMAND_LINE.fullmatch(line) if kind is _Kind.TEXT else None
        if match is not None and match["name"].lower() in COMMAND_NAMES:
            commands.append((index, match))
    return commands


def _build(
    name: str, words: list[str], lines: list[str], kinds: list[_Kind], following: range
) -> Command:
    if name == "approve-plan":
        return Command(name, revision=_revision(words))
    if name in TASK_COMMANDS:
        return Command(name, task_id=_task_id(name, words))
    if name == "revise-plan":
        return Command(name, text=_feedback(words, [lines[index] for index in following]))
    if name == "edit-plan":
        return Command(name, text=" ".join(words), plan_yaml=_plan_yaml(lines, kinds, following))
    if words:
        raise CommandError(f"`/{name}` takes nothing after it, got `{_shown(words)}`")
    return Command(name)


def _revision(words: list[str]) -> int | None:
    if not words:
        return None
    match = _REVISION.fullmatch(words[0])
    if match is None:
        raise CommandError(
            f"`/approve-plan` takes an optional revision like `r2`, got `{_shown(words[:1])}`"
        )
    revision = int(match["number"])
    if len(words) > 1:
        raise CommandError(
            f"`/approve-plan r{revision}` takes nothing after the revision, "
            f"got `{_shown(words[1:])}`"
        )
    return revision


def _task_id(name: str, words: list[str]) -> str:
    if not words:
        raise CommandError(f"`/{name}` needs a task id like `T3`")
    match = _TASK_ID.fullmatch(words[0])
    if match is None:
        raise CommandError(f"`/{name}` needs a task id like `T3`, got `{_shown(words[:1])}`")
    task_id = f"T{int(match['number'])}"
    if len(words) > 1:
        raise CommandError(
            f"`/{name} {task_id}` takes nothing after the task id, got `{_shown(words[1:])}`"
        )
    return task_id


def _feedback(words: list[str], following_lines: list[str]) -> str:
    feedback = "\n".join([" ".join(words), *following_lines]).strip()
    if not feedback:
        raise CommandError("`/revise-plan` needs feedback after it")
    return feedback


def _plan_yaml(lines: list[str], kinds: list[_Kind], following: range) -> str:
    """The content of the first ```yaml, ```yml or bare fenced block among `following` lines."""
    for index in following:
        fence = _fence_opening(lines[index]) if kinds[index] is _Kind.FENCE_OPEN else None
        if fence is None or fence.language not in PLAN_LANGUAGES:
            continue
        content = []
        for line, kind in zip(lines[index + 1 :], kinds[index + 1 :], strict=True):
            if kind is not _Kind.CODE:
                break
            content.append(_dedent(line, fence.indent))
        plan = "\n".join(content).rstrip()
        if plan:
            return plan + "\n"
    raise CommandError("`/edit-plan` needs the plan as a fenced YAML block after it")


def _line_kinds(lines: list[str]) -> list[_Kind]:
    """What each line is, following fences and HTML comments from the top of the comment."""
    kinds: list[_Kind] = []
    fence: _Fence | None = None
    in_html_comment = False
    for line in lines:
        if fence is not None:
            closes = _closes(line, fence)
            kinds.append(_Kind.FENCE_CLOSE if closes else _Kind.CODE)
            fence = None if closes else fence
        elif in_html_comment:
            kinds.append(_Kind.HIDDEN)
            in_html_comment = "-->" not in line
        elif (opening := _fence_opening(line)) is not None:
            kinds.append(_Kind.FENCE_OPEN)
            fence = opening
        elif line.lstrip().startswith(">"):
            kinds.append(_Kind.QUOTE)
        elif line.lstrip().startswith("<!--"):
            kinds.append(_Kind.HIDDEN)
            in_html_comment = "-->" not in line.lstrip()[len("<!--") :]
        else:
            kinds.append(_Kind.TEXT)
    return kinds


def _fence_opening(line: str) -> _Fence | None:
    match = _FENCE_OPENING.fullmatch(line)
    # A backtick in the info string makes the line inline code (```x```), not a fence.
    if match is None or (match["marks"][0] == "`" and "`" in match["info"]):
        return None
    language = (match["info"].split() or [""])[0].lower()
    return _Fence(match["marks"], language, len(match["indent"]))


def _closes(line: str, fence: _Fence) -> bool:
    match = _FENCE_CLOSING.fullmatch(line)
    return (
        match is not None
        and match["marks"][0] == fence.marks[0]
        and len(match["marks"]) >= len(fence.marks)
    )


def _dedent(line: str, indent: int) -> str:
    # Code under an indented fence is indented as much; that indentation is not the plan's.
    removable = len(line) - len(line.lstrip(" "))
    return line[min(indent, removable) :]


def _shown(words: list[str]) -> str:
    text = " ".join(words).replace("`", "'")
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return text[: SHOWN_CHARACTERS - 1] + "…"
