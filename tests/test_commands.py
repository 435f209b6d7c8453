"""Slash commands in comments: each command, each error message, and text that only shows one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import COMMAND_NAMES, Command, CommandError, parse_command

PLAN = "summary: Split the parser\ntasks:\n  - id: T1\n    title: Parser\n"


def error_of(body: str) -> str:
    with pytest.raises(CommandError) as raised:
        parse_command(body)
    return str(raised.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/approve-plan", Command("approve-plan")),
        ("/approve-plan r2", Command("approve-plan", revision=2)),
        ("/approve-plan R12", Command("approve-plan", revision=12)),
        ("/approve-plan r02", Command("approve-plan", revision=2)),
        ("/APPROVE-PLAN", Command("approve-plan")),
        ("  /approve-plan  ", Command("approve-plan")),
        ("   /approve-plan r3", Command("approve-plan", revision=3)),
        ("/approve-plan single", Command("approve-plan", single=True)),
        ("/approve-plan r2 Single", Command("approve-plan", revision=2, single=True)),
        ("/approve-task T3", Command("approve-task", task_id="T3")),
        ("/approve-task t3", Command("approve-task", task_id="T3")),
        ("/retry T12", Command("retry", task_id="T12")),
        ("/Retry t007", Command("retry", task_id="T7")),
        ("/skip T1", Command("skip", task_id="T1")),
        ("/cancel", Command("cancel")),
        (
            "/revise-plan add a test for the empty case",
            Command("revise-plan", text="add a test for the empty case"),
        ),
    ],
    ids=[
        "approve-plan",
        "approve-plan-revision",
        "approve-plan-capital-revision",
        "approve-plan-revision-leading-zero",
        "name-in-capitals",
        "spaces-around",
        "three-spaces",
        "approve-plan-single",
        "approve-plan-revision-single",
        "approve-task",
        "approve-task-lowercase-id",
        "retry",
        "retry-mixed-case",
        "skip",
        "cancel",
        "revise-plan-one-line",
    ],
)
def test_each_command_is_read(body: str, expected: Command) -> None:
    assert parse_command(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/approve-plan rev2", "`/approve-plan` takes an optional revision like `r2`, got `rev2`"),
        ("/approve-plan 2", "`/approve-plan` takes an optional revision like `r2`, got `2`"),
        ("/approve-plan r", "`/approve-plan` takes an optional revision like `r2`, got `r`"),
        (
            "/approve-plan single r2",
            "`/approve-plan` takes an optional revision like `r2`, got `single`",
        ),
        (
            "/approve-plan r2 single please",
            "`/approve-plan r2` takes nothing after the revision but `single`, got `single please`",
        ),
        (
            "/approve-plan thanks!",
            "`/approve-plan` takes an optional revision like `r2`, got `thanks!`",
        ),
        (
            "/approve-plan r1234567890",
            "`/approve-plan` takes an optional revision like `r2`, got `r1234567890`",
        ),
        (
            "/approve-plan r2 looks good",
            "`/approve-plan r2` takes nothing after the revision but `single`, got `looks good`",
        ),
        ("/retry", "`/retry` needs a task id like `T3`"),
        ("/skip   ", "`/skip` needs a task id like `T3`"),
        ("/approve-task", "`/approve-task` needs a task id like `T3`"),
        ("/retry 3", "`/retry` needs a task id like `T3`, got `3`"),
        ("/skip task3", "`/skip` needs a task id like `T3`, got `task3`"),
        ("/approve-task T3.1", "`/approve-task` needs a task id like `T3`, got `T3.1`"),
        ("/retry t3 please", "`/retry T3` takes nothing after the task id, got `please`"),
        ("/skip T4 and T5", "`/skip T4` takes nothing after the task id, got `and T5`"),
        ("/cancel now", "`/cancel` takes nothing after it, got `now`"),
        ("/revise-plan", "`/revise-plan` needs feedback after it"),
        ("/revise-plan   \n\n  \n", "`/revise-plan` needs feedback after it"),
        ("/revise-plan\n/cancel", "`/revise-plan` needs feedback after it"),
        ("/edit-plan", "`/edit-plan` needs the plan as a fenced YAML block after it"),
        (
            "/edit-plan\nsummary: not fenced\n",
            "`/edit-plan` needs the plan as a fenced YAML block after it",
        ),
        (
            "/edit-plan\n```yaml\n\n```\n",
            "`/edit-plan` needs the plan as a fenced YAML block after it",
        ),
        (
            "/edit-plan\n```python\nprint(1)\n```\n",
            "`/edit-plan` needs the plan as a fenced YAML block after it",
        ),
        (
            "/edit-plan\n> ```yaml\n> summary: quoted\n> ```\n",
            "`/edit-plan` needs the plan as a fenced YAML block after it",
        ),
        (
            f"/edit-plan\n/cancel\n```yaml\n{PLAN}```\n",
            "`/edit-plan` needs the plan as a fenced YAML block after it",
        ),
        (
            "/retry " + "x" * 100,
            "`/retry` needs a task id like `T3`, got `" + "x" * 39 + "…`",
        ),
        ("/retry `T3`", "`/retry` needs a task id like `T3`, got `'T3'`"),
    ],
    ids=[
        "revision-spelt-out",
        "revision-without-r",
        "revision-without-number",
        "single-before-revision",
        "words-after-single",
        "words-instead-of-revision",
        "revision-too-long",
        "words-after-revision",
        "retry-without-id",
        "skip-without-id",
        "approve-task-without-id",
        "task-id-without-t",
        "task-id-spelt-out",
        "task-id-with-dot",
        "words-after-task-id",
        "second-task-id",
        "words-after-cancel",
        "revise-without-feedback",
        "revise-with-blank-lines",
        "revise-feedback-ends-at-next-command",
        "edit-without-block",
        "edit-with-unfenced-plan",
        "edit-with-empty-block",
        "edit-with-other-language",
        "edit-with-quoted-block",
        "edit-block-after-next-command",
        "long-words-shortened",
        "backticks-in-words",
    ],
)
def test_each_error_says_what_the_command_needs(body: str, expected: str) -> None:
    assert error_of(body) == expected


def test_revise_plan_feedback_runs_to_the_next_command() -> None:
    body = (
        "Thanks, close.\n"
        "/revise-plan merge T2 into T1\n"
        "and give T3 the migration files.\n"
        "\n"
        "```python\n"
        "/cancel  # shown, not given\n"
        "```\n"
        "/skip T4\n"
        "ignored\n"
    )

    assert parse_command(body) == Command(
        "revise-plan",
        text=(
            "merge T2 into T1\nand give T3 the migration files.\n\n"
            "```python\n/cancel  # shown, not given\n```"
        ),
    )


def test_revise_plan_feedback_may_start_on_the_next_line() -> None:
    body = "/revise-plan\n\n  - drop T2\n  - keep T1 small\n\n"

    assert parse_command(body) == Command("revise-plan", text="- drop T2\n  - keep T1 small")


@pytest.mark.parametrize(
    "body",
    [
        f"/edit-plan\n```yaml\n{PLAN}```\n",
        f"/edit-plan\n```yml\n{PLAN}```\n",
        f"/edit-plan\n```\n{PLAN}```\n",
        f"/edit-plan\n```YAML title=plan\n{PLAN}```\n",
        f"/edit-plan\n~~~yaml\n{PLAN}~~~\n",
        f"/edit-plan\n~~~\n{PLAN}~~~\n",
        f"/edit-plan\n````yaml\n{PLAN}````\n",
        f"/edit-plan\n\nHere it is:\n\n```yaml\n{PLAN}```\n\nThanks!",
        f"/edit-plan\n```python\nnot = 'this'\n```\n```yaml\n{PLAN}```\n",
        "/edit-plan\n  ```yaml\n"
        + "".join(f"  {line}\n" for line in PLAN.splitlines())
        + "  ```\n",
        f"/edit-plan\n```yaml\n{PLAN}",
    ],
    ids=[
        "yaml",
        "yml",
        "bare-backticks",
        "yaml-with-attributes",
        "tildes-yaml",
        "bare-tildes",
        "four-backticks",
        "words-around-the-block",
        "first-yaml-block",
        "indented-fence",
        "unclosed-fence",
    ],
)
def test_edit_plan_takes_the_first_yaml_block(body: str) -> None:
    assert parse_command(body) == Command("edit-plan", plan_yaml=PLAN)


def test_edit_plan_keeps_a_fence_inside_a_longer_fence() -> None:
    body = "/edit-plan\n````yaml\nsummary: |\n  ```\n  kept\n  ```\n````\n"

    command = parse_command(body)

    assert command is not None
    assert command.plan_yaml == "summary: |\n  ```\n  kept\n  ```\n"


def test_edit_plan_keeps_words_on_its_own_line() -> None:
    body = f"/edit-plan dropping T4\n```yaml\n{PLAN}```"

    assert parse_command(body) == Command("edit-plan", text="dropping T4", plan_yaml=PLAN)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "Looks good to me.",
        "> /approve-plan\n\nWhat does this do?",
        "   > /cancel",
        ">/retry T1",
        "```\n/approve-plan\n```",
        "~~~\n/cancel\n~~~",
        "```sh\n/skip T1\n",
        "    ```\n    /cancel\n    ```",
        "    /cancel",
        "\t/approve-plan\tr3",
        "  \t/cancel",
        "Look:\n\n        /cancel",
        "```\n    ```\n/cancel\n```",
        "- ```\n  /cancel\n  ```",
        "<!-- /cancel -->",
        "<!--\n/approve-plan\n-->",
        "Noted <!--\n/cancel\n-->",
        "<pre>\n/cancel\n</pre>",
        "<PRE class=x>\n/cancel\n</PRE>",
        "Output: <pre>\n/cancel\n</pre>",
        "<pre>\n\n/cancel\n\n</pre>",
        "<div><pre>\n\n/cancel\n\n</pre></div>",
        "<code>\n/cancel\n</code>",
        "Run <code>\n/cancel\n</code>",
        "[//]: # (\n/cancel\n)",
        "<div hidden>\n\n/cancel\n\n</div>",
        "<script>\n/cancel\n</script>",
        "please /approve-plan",
        "- /approve-plan",
        "`/approve-plan`",
        "```/cancel```",
        "/lgtm",
        "/usr/bin/python3 crashed",
        "/approve-plan.",
        "/approve-plan: yes",
        "/cancel!",
        "/approve",
        "/",
    ],
    ids=[
        "empty",
        "plain-text",
        "quoted",
        "indented-quote",
        "quote-without-space",
        "backtick-fence",
        "tilde-fence",
        "unclosed-fence",
        "indented-fence",
        "indented-code",
        "tab-indented-code",
        "spaces-and-tab-indented-code",
        "indented-code-after-prose",
        "indented-fence-does-not-close",
        "fence-in-a-list-item",
        "html-comment",
        "multiline-html-comment",
        "html-comment-opened-mid-line",
        "pre",
        "pre-in-capitals-with-attributes",
        "pre-opened-mid-line",
        "pre-across-blank-lines",
        "pre-inside-a-block",
        "code-across-lines",
        "code-opened-mid-line",
        "link-reference-comment",
        "hidden-element",
        "script",
        "mid-line",
        "list-item",
        "inline-code",
        "inline-code-with-three-backticks",
        "unknown-command",
        "path",
        "trailing-dot",
        "trailing-colon",
        "trailing-bang",
        "name-prefix",
        "slash-alone",
    ],
)
def test_text_that_gives_no_command_is_none(body: str) -> None:
    assert parse_command(body) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/cancel\n/approve-plan", Command("cancel")),
        ("/lgtm\n/approve-plan r3", Command("approve-plan", revision=3)),
        ("> /cancel\n/skip T2", Command("skip", task_id="T2")),
        ("```\n/cancel\n```\n/retry T1", Command("retry", task_id="T1")),
        ("<!--\n/cancel\n-->\n/retry T5", Command("retry", task_id="T5")),
        ("<pre>\n/cancel\n</pre>\n\n/retry T5", Command("retry", task_id="T5")),
        ("    /cancel\n\n/retry T5", Command("retry", task_id="T5")),
        (
            "Some context first.\n\n  /approve-task T2\n/cancel",
            Command("approve-task", task_id="T2"),
        ),
    ],
    ids=[
        "first-of-two",
        "after-unknown-word",
        "after-quote",
        "after-fence",
        "after-html-comment",
        "after-pre",
        "after-indented-code",
        "after-prose",
    ],
)
def test_the_first_command_wins(body: str, expected: Command) -> None:
    assert parse_command(body) == expected


def test_a_bad_first_command_is_an_error_even_with_a_good_one_after() -> None:
    assert error_of("/retry\n/cancel") == "`/retry` needs a task id like `T3`"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/approve-plan r2\r\n", Command("approve-plan", revision=2)),
        ("> /cancel\r\n/skip T2\r\n", Command("skip", task_id="T2")),
        ("```\r\n/cancel\r\n```\r\n/retry t1\r\n", Command("retry", task_id="T1")),
        ("/revise-plan one\r\ntwo\r\n\r\n/cancel\r\n", Command("revise-plan", text="one\ntwo")),
        ("/revise-plan one\rtwo", Command("revise-plan", text="one\ntwo")),
        (
            "/edit-plan\r\n```yaml\r\n" + PLAN.replace("\n", "\r\n") + "```\r\n",
            Command("edit-plan", plan_yaml=PLAN),
        ),
    ],
    ids=["argument", "quote", "fence", "revise-feedback", "bare-carriage-returns", "edit-plan"],
)
def test_windows_line_ends_read_like_unix_ones(body: str, expected: Command) -> None:
    assert parse_command(body) == expected


def test_command_names_are_the_documented_ones() -> None:
    assert COMMAND_NAMES == (
        "approve-plan",
        "revise-plan",
        "edit-plan",
        "approve-task",
        "retry",
        "skip",
        "cancel",
    )


comment_fragments = st.sampled_from(
    [*"/>`~ \t\r\nrRtT0123456789-!<", "```", "~~~", "<!--", "-->", *COMMAND_NAMES]
)
comment_text = st.lists(comment_fragments, max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(body=comment_text | st.text(max_size=300))
def test_any_comment_gives_a_command_none_or_a_command_error(body: str) -> None:
    try:
        command = parse_command(body)
    except CommandError:
        command = None
    assert command is None or command.name in COMMAND_NAMES
