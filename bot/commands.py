"""Slash commands in an issue comment (CONTRACT §5), read the way a person reads the comment.

A command is a line of a paragraph whose first text is `/name` followed by a space or the end of
the line. The comment is read as GitHub shows it: what the page hides (HTML comments, hidden
elements, link reference definitions) is gone first. Code is never a command (fenced, indented
by four columns or a tab, or inside `<pre>` or `<code>`), nor is a quoted line (`> /approve-plan`
in a reply): the person is showing or quoting a command, not giving one. A `/word` that names no
command (`/lgtm`, `/usr/bin`) is ordinary text.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from markdown_it.token import Token

from bot.github.untrusted import GITHUB_MARKDOWN, displayed_markdown

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
SINGLE_WORD = "single"  # `/approve-plan single`
# The fence languages `/edit-plan` reads as the plan; "" is a fence with no language.
PLAN_LANGUAGES = ("yaml", "yml", "")
# Words echoed back in an error are cut to this many characters.
SHOWN_CHARACTERS = 40
CODE_INDENT = 4  # columns: a line indented this far is code, or at least not a command

_COMMAND_LINE = re.compile(r"\s*/(?P<name>\S+)(?P<rest>\s.*)?")
# Tags as `displayed_markdown` writes them (lower case, no attributes).
_CODE_TAG = re.compile(r"<(?P<closing>/?)(?:pre|code)>")
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
    single: bool = False  # `/approve-plan single`: one agent works the whole issue


class CommandError(ValueError):
    """A command with arguments it cannot take; the message says what it needs, for a reply."""


def parse_command(body: str) -> Command | None:
    """The first command in the comment `body`, or None when it gives none.

    Raises CommandError when that first command's arguments are wrong; later lines never rescue it.
    """
    text = displayed_markdown(body)
    lines = text.split("\n")
    tokens = GITHUB_MARKDOWN.parse(text)
    commands = _command_lines(lines, _command_candidates(tokens))
    if not commands:
        return None
    first, match = commands[0]
    # A command's own lines run to the next command: its feedback, or where its plan is.
    region_end = commands[1][0] if len(commands) > 1 else len(lines)
    words = (match["rest"] or "").split()
    return _build(match["name"].lower(), words, lines, tokens, range(first + 1, region_end))


def _command_lines(lines: list[str], candidates: set[int]) -> list[tuple[int, re.Match[str]]]:
    commands = []
    for index in sorted(candidates):
        line = lines[index]
        if line.lstrip().startswith(">") or _indent(line) >= CODE_INDENT:
            continue
        match = _COMMAND_LINE.fullmatch(line)
        if match is not None and match["name"].lower() in COMMAND_NAMES:
            commands.append((index, match))
    return commands


def _command_candidates(tokens: list[Token]) -> set[int]:
    """The lines of paragraphs that are outside `<pre>` and `<code>` and hold none of their tags."""
    candidates: set[int] = set()
    depth = 0  # how many `<pre>` and `<code>` elements are open
    for token in tokens:
        if token.type == "html_block":
            depth = _depth_after(token.content, depth)
        elif token.type == "inline" and token.map is not None:
            line, touched = token.map[0], depth > 0
            for child in token.children or []:
                if child.type in ("softbreak", "hardbreak"):
                    if not touched:
                        candidates.add(line)
                    line, touched = line + 1, depth > 0
                elif child.type == "html_inline" and _CODE_TAG.search(child.content):
                    depth, touched = _depth_after(child.content, depth), True
            if not touched:
                candidates.add(line)
    return candidates & _paragraph_lines(tokens)


def _paragraph_lines(tokens: list[Token]) -> set[int]:
    return {
        line
        for token in tokens
        if token.type == "paragraph_open" and token.map is not None
        for line in range(*token.map)
    }


def _depth_after(html: str, depth: int) -> int:
    for tag in _CODE_TAG.finditer(html):
        depth = max(depth - 1, 0) if tag["closing"] else depth + 1
    return depth


def _indent(line: str) -> int:
    """The columns of a line's leading spaces and tabs, a tab going to the next multiple of 4."""
    leading = line[: len(line) - len(line.lstrip(" \t"))]
    return len(leading.expandtabs(CODE_INDENT))


def _build(
    name: str, words: list[str], lines: list[str], tokens: list[Token], following: range
) -> Command:
    if name == "approve-plan":
        return _approval(words)
    if name in TASK_COMMANDS:
        return Command(name, task_id=_task_id(name, words))
    if name == "revise-plan":
        return Command(name, text=_feedback(words, [lines[index] for index in following]))
    if name == "edit-plan":
        return Command(name, text=" ".join(words), plan_yaml=_plan_yaml(tokens, following))
    if words:
        raise CommandError(f"`/{name}` takes nothing after it, got `{_shown(words)}`")
    return Command(name)


def _approval(words: list[str]) -> Command:
    """`/approve-plan [rN] [single]`: the revision, then whether one agent works the issue."""
    single = bool(words) and words[-1].lower() == SINGLE_WORD
    rest = words[:-1] if single else words
    return Command("approve-plan", revision=_revision(rest), single=single)


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
            f"`/approve-plan r{revision}` takes nothing after the revision but `single`, "
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


def _plan_yaml(tokens: list[Token], following: range) -> str:
    """The content of the first ```yaml, ```yml or bare fenced block (not in a quote or a list)
    that starts on one of the `following` lines."""
    for token in tokens:
        if token.type != "fence" or token.level != 0 or token.map is None:
            continue
        language = (token.info.split() or [""])[0].lower()
        if token.map[0] in following and language in PLAN_LANGUAGES and token.content.strip():
            return token.content.rstrip() + "\n"
    raise CommandError("`/edit-plan` needs the plan as a fenced YAML block after it")


def _shown(words: list[str]) -> str:
    text = " ".join(words).replace("`", "'")
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return text[: SHOWN_CHARACTERS - 1] + "…"
