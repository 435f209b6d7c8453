"""`.github/baton.yml`: defaults, a full file, and an exact message for each way it can be wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import CONFIG_PATH, ConfigError, ModelChoices, RepoConfig, parse_config
from bot.llm.budget import BudgetLimits
from bot.llm.pricing import Price

KNOWN_TOP_KEYS = (
    "label, models, max_parallel, max_tasks, budget, protected_paths, setup_command, "
    "test_command, lint_command, branch_prefix, review_rounds, ci_fix_rounds, merge_rounds, "
    "prices, mode, baseline_share"
)
KNOWN_MODEL_KEYS = "orchestrator, implementer, test_writer, refactorer, static_analyst"

FULL_FILE = """\
# Baton settings for this repository
label: automate
models:
  orchestrator: anthropic/claude-opus-4-6
  implementer: openai/gpt-5.3-codex
  test_writer: openai/meta-llama/Llama-3.3-70B
  refactorer: anthropic/claude-sonnet-4-6
  static_analyst: openai/gpt-5-mini
max_parallel: 4
max_tasks: 12
budget:
  run_usd: 20
  task_usd: 2.5
  task_tokens: 400000
protected_paths:
  - ".github/**"
  - "migrations/*.sql"
setup_command: pip install -e .[dev]
test_command: pytest -q
lint_command: ruff check .
branch_prefix: bots/baton/
review_rounds: 2
prices:
  openai/meta-llama/Llama-3.3-70B: {input: 0.6, output: 0.6}
  openai/gpt-5.3-codex: {input: 1.25, output: 10, cache_read: 0.125, cache_write: 0}
mode: auto
baseline_share: 0.25
"""


def problem(text: str | bytes) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    return str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        b"",
        "   \n\n",
        "# only a comment\n",
        "null\n",
        "---\n",
        "budget:\nmodels:\nlabel:\n",
    ],
    ids=[
        "no-file",
        "empty",
        "empty-bytes",
        "blank",
        "comment",
        "null",
        "document-marker",
        "empty-keys",
    ],
)
def test_no_settings_means_the_defaults(text: str | bytes | None) -> None:
    config = parse_config(text)

    assert config == RepoConfig()
    assert (config.label, config.max_parallel, config.max_tasks) == ("baton", 2, 8)
    assert (config.branch_prefix, config.review_rounds, config.protected_paths) == ("baton/", 3, [])
    assert (config.setup_command, config.test_command, config.lint_command) == (None, None, None)
    assert (config.mode, config.baseline_share) == ("orchestrated", 0.0)
    assert config.budget_limits() == BudgetLimits()
    assert config.models == ModelChoices()
    assert config.price_overrides() == {}


def test_a_full_file_is_read_key_by_key() -> None:
    config = parse_config(FULL_FILE)

    assert config.label == "automate"
    assert (config.max_parallel, config.max_tasks, config.review_rounds) == (4, 12, 2)
    assert (config.mode, config.baseline_share) == ("auto", 0.25)
    assert config.budget_limits() == BudgetLimits(task_tokens=400000, task_usd=2.5, run_usd=20.0)
    # The repository's own limits win over the instance's defaults.
    defaults = BudgetLimits(task_usd=5.0, run_usd=50.0)
    assert config.budget_limits(defaults) == config.budget_limits()
    assert config.protected_paths == [".github/**", "migrations/*.sql"]
    assert config.setup_command == "pip install -e .[dev]"
    assert (config.test_command, config.lint_command) == ("pytest -q", "ruff check .")
    assert config.branch_prefix == "bots/baton/"
    assert config.price_overrides() == {
        "openai/meta-llama/Llama-3.3-70B": Price(0.6, 0.6),
        "openai/gpt-5.3-codex": Price(1.25, 10.0, cache_read=0.125, cache_write=0.0),
    }


def test_a_model_is_read_for_each_role() -> None:
    assert parse_config(FULL_FILE).models == ModelChoices(
        orchestrator="anthropic/claude-opus-4-6",
        implementer="openai/gpt-5.3-codex",
        test_writer="openai/meta-llama/Llama-3.3-70B",
        refactorer="anthropic/claude-sonnet-4-6",
        static_analyst="openai/gpt-5-mini",
    )


def test_a_limit_the_repository_leaves_unset_is_the_instances_default() -> None:
    config = parse_config("budget:\n  task_usd: 1.5\n")

    limits = config.budget_limits(BudgetLimits(task_usd=5.0, run_usd=20.0))

    assert (limits.run_usd, limits.task_usd, limits.task_tokens) == (20.0, 1.5, None)
    assert limits.defaults == {"run_usd"}


def test_a_role_left_out_is_left_to_the_settings() -> None:
    config = parse_config("models:\n  implementer: openai/gpt-5\n")

    assert config.models == ModelChoices(implementer="openai/gpt-5")


def test_a_stored_config_reads_back_the_same() -> None:
    config = parse_config(FULL_FILE)

    stored = json.loads(json.dumps(config.model_dump(mode="json")))

    assert RepoConfig.model_validate(stored) == config


def test_bytes_with_a_byte_order_mark_are_read() -> None:
    assert parse_config(b"\xef\xbb\xbflabel: bot\n").label == "bot"


def test_the_config_is_frozen() -> None:
    config = RepoConfig()

    with pytest.raises(ValueError, match="Instance is frozen"):
        config.label = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("modles: {}\n", f"unknown key `modles` (known keys: {KNOWN_TOP_KEYS})"),
        (
            "models:\n  planner: openai/gpt-5\n",
            f"unknown key `models.planner` (known keys: {KNOWN_MODEL_KEYS})",
        ),
        (
            "budget:\n  run_dollars: 3\n",
            "unknown key `budget.run_dollars` (known keys: run_usd, task_usd, task_tokens)",
        ),
        (
            "prices:\n  openai/m: {input: 1, output: 2, cached: 1}\n",
            "unknown key `prices.openai/m.cached` "
            "(known keys: input, output, cache_read, cache_write)",
        ),
        ("1: x\n", f"unknown key `1` (known keys: {KNOWN_TOP_KEYS})"),
        (
            "models:\n  implementer: gpt-5\n",
            "models.implementer: expected 'provider/model' with provider one of anthropic, "
            "openai, got 'gpt-5'",
        ),
        (
            "models:\n  orchestrator: google/gemini\n",
            "models.orchestrator: expected 'provider/model' with provider one of anthropic, "
            "openai, got 'google/gemini'",
        ),
        (
            "models:\n  refactorer: 'openai/'\n",
            "models.refactorer: expected 'provider/model' with provider one of anthropic, "
            "openai, got 'openai/'",
        ),
        ("models: openai/gpt-5\n", "models: Input should be a mapping of `key: value` lines"),
        ("label: 12\n", "label: Input should be a valid string"),
        ("label: ''\n", "label: String should have at least 1 character"),
        ("label: " + "x" * 51 + "\n", "label: String should have at most 50 characters"),
        ("max_parallel: 0\n", "max_parallel: Input should be greater than or equal to 1"),
        ("max_parallel: 17\n", "max_parallel: Input should be less than or equal to 16"),
        ("max_parallel: '3'\n", "max_parallel: Input should be a valid integer"),
        ("max_parallel: yes\n", "max_parallel: Input should be a valid integer"),
        ("max_parallel: 2.5\n", "max_parallel: Input should be a valid integer"),
        ("max_tasks: 51\n", "max_tasks: Input should be less than or equal to 50"),
        ("max_tasks: 0\n", "max_tasks: Input should be greater than or equal to 1"),
        ("review_rounds: 0\n", "review_rounds: Input should be greater than or equal to 1"),
        ("review_rounds: 11\n", "review_rounds: Input should be less than or equal to 10"),
        (
            "mode: solo\n",
            "mode: Input should be 'orchestrated', 'single' or 'auto'",
        ),
        ("baseline_share: 1.5\n", "baseline_share: Input should be less than or equal to 1"),
        ("baseline_share: -0.1\n", "baseline_share: Input should be greater than or equal to 0"),
        ("baseline_share: '0.5'\n", "baseline_share: Input should be a valid number"),
        ("baseline_share: .nan\n", "baseline_share: Input should be a finite number"),
        ("budget:\n  run_usd: 0\n", "budget.run_usd: Input should be greater than 0"),
        ("budget:\n  task_usd: -1.5\n", "budget.task_usd: Input should be greater than 0"),
        ("budget:\n  run_usd: .inf\n", "budget.run_usd: Input should be a finite number"),
        ("budget:\n  task_usd: ten\n", "budget.task_usd: Input should be a valid number"),
        ("budget:\n  task_tokens: 0\n", "budget.task_tokens: Input should be greater than 0"),
        ("budget:\n  task_tokens: 1.5\n", "budget.task_tokens: Input should be a valid integer"),
        ("budget: 5\n", "budget: Input should be a mapping of `key: value` lines"),
        ("protected_paths: src/**\n", "protected_paths: Input should be a valid list"),
        (
            "protected_paths: [docs/*, 3]\n",
            "protected_paths[1]: Input should be a valid string",
        ),
        (
            "protected_paths: ['']\n",
            "protected_paths[0]: String should have at least 1 character",
        ),
        ("test_command: [pytest, -q]\n", "test_command: Input should be a valid string"),
        (
            "prices:\n  gpt-5: {input: 1, output: 2}\n",
            "prices.gpt-5: expected 'provider/model' with provider one of anthropic, openai, "
            "got 'gpt-5'",
        ),
        (
            "prices:\n  openai/m: {input: 1}\n",
            "prices.openai/m.output: Field required",
        ),
        (
            "prices:\n  openai/m: {input: -1, output: 2}\n",
            "prices.openai/m.input: Input should be greater than or equal to 0",
        ),
        (
            "prices:\n  openai/m: 3\n",
            "prices.openai/m: Input should be a mapping of `key: value` lines",
        ),
        ("prices: [openai/m]\n", "prices: Input should be a mapping of `key: value` lines"),
    ],
    ids=[
        "unknown-top-key",
        "unknown-model-role",
        "unknown-budget-key",
        "unknown-price-key",
        "number-as-key",
        "model-without-provider",
        "model-unknown-provider",
        "model-without-name",
        "models-not-a-mapping",
        "label-not-text",
        "label-empty",
        "label-too-long",
        "max-parallel-zero",
        "max-parallel-too-many",
        "max-parallel-quoted",
        "max-parallel-boolean",
        "max-parallel-fraction",
        "max-tasks-too-many",
        "max-tasks-zero",
        "review-rounds-zero",
        "review-rounds-too-many",
        "mode-unknown",
        "baseline-share-over-one",
        "baseline-share-negative",
        "baseline-share-quoted",
        "baseline-share-nan",
        "run-usd-zero",
        "task-usd-negative",
        "run-usd-infinite",
        "task-usd-text",
        "task-tokens-zero",
        "task-tokens-fraction",
        "budget-not-a-mapping",
        "protected-paths-not-a-list",
        "protected-path-not-text",
        "protected-path-empty",
        "command-as-list",
        "price-model-without-provider",
        "price-without-output",
        "price-negative",
        "price-not-a-mapping",
        "prices-not-a-mapping",
    ],
)
def test_a_bad_value_is_named_with_its_key(text: str, expected: str) -> None:
    assert problem(text) == f"{CONFIG_PATH}: {expected}"


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("my branch/", "contains a space or control character"),
        ("baton\t/", "contains a space or control character"),
        ("bots/../x/", "contains .."),
        ("a~b^/", "contains ~ and ^"),
        ("what?/", "contains ?"),
        ("x:y/", "contains :"),
        ("glob*/", "contains *"),
        ("[x]/", "contains ["),
        ("back\\\\slash/", "contains \\"),
        ("at@{1}/", "contains @{"),
        ("two//slashes/", "contains //"),
        ("/baton/", "starts with /"),
        ("baton", "does not end with /"),
        (".hidden/", "has a part that starts with . or ends with .lock"),
        ("bots/.x/", "has a part that starts with . or ends with .lock"),
        ("refs.lock/", "has a part that starts with . or ends with .lock"),
    ],
    ids=[
        "space",
        "tab",
        "dot-dot",
        "tilde-caret",
        "question-mark",
        "colon",
        "star",
        "bracket",
        "backslash",
        "at-brace",
        "double-slash",
        "leading-slash",
        "no-trailing-slash",
        "leading-dot",
        "inner-leading-dot",
        "dot-lock",
    ],
)
def test_a_branch_prefix_git_would_refuse_is_refused(prefix: str, reason: str) -> None:
    written = prefix.replace("\\\\", "\\")

    assert problem(f'branch_prefix: "{prefix}"\n') == (
        f"{CONFIG_PATH}: branch_prefix: {written!r} is not a usable git branch prefix: it {reason}"
    )


@pytest.mark.parametrize(
    "prefix",
    ["", "baton/", "bots/baton/", "team-a/bot_work/"],
    ids=["empty", "default", "nested", "mixed"],
)
def test_a_usable_branch_prefix_is_kept(prefix: str) -> None:
    assert parse_config(f"branch_prefix: '{prefix}'\n").branch_prefix == prefix


def test_every_problem_is_reported_on_its_own_line() -> None:
    text = "modles: {}\nmax_tasks: 0\nbudget:\n  run_usd: 0\n"

    assert problem(text).splitlines() == [
        f"{CONFIG_PATH}: unknown key `modles` (known keys: {KNOWN_TOP_KEYS})",
        f"{CONFIG_PATH}: max_tasks: Input should be greater than or equal to 1",
        f"{CONFIG_PATH}: budget.run_usd: Input should be greater than 0",
    ]


def test_problems_are_kept_for_callers_without_the_file_name() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("max_tasks: 0\nlabel: 1\n")

    assert raised.value.problems == (
        "max_tasks: Input should be greater than or equal to 1",
        "label: Input should be a valid string",
    )


def test_a_flood_of_problems_is_cut_short_with_a_count() -> None:
    text = "protected_paths: [" + ", ".join(["1"] * 25) + "]\n"

    lines = problem(text).splitlines()

    assert len(lines) == 21
    assert lines[0] == f"{CONFIG_PATH}: protected_paths[0]: Input should be a valid string"
    assert lines[-1] == f"{CONFIG_PATH}: and 5 more problems"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("label: baton\nmodels: x: y\n", "line 2, column 10: mapping values are not allowed here"),
        (
            "label: a\nmodels:\n  implementer: openai/gpt-5\n orchestrator: openai/gpt-5\n",
            "line 4, column 2: expected <block end>, but found '<block mapping start>'",
        ),
        (
            "label: baton\nbudget:\n\trun_usd: 3\n",
            "line 3, column 1: found character '\\t' that cannot start any token",
        ),
        (
            "protected_paths: [a, b\n",
            "line 2, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        ("label: 'open\n", "line 2, column 1: found unexpected end of stream"),
        ("label: a\nlabel: b\n", "line 2, column 1: duplicate key `label`"),
        ("budget: {run_usd: 1, run_usd: 2}\n", "line 1, column 22: duplicate key `run_usd`"),
        (
            "label: a\n---\nlabel: b\n",
            "line 2, column 1: expected a single document in the stream, "
            "but found another document",
        ),
        ("label: *nowhere\n", "line 1, column 8: found undefined alias 'nowhere'"),
        ("label: 2024-13-45\n", "line 1, column 8: cannot read this value: month must be in 1..12"),
        ("label: a\x00b\n", "line 1, column 9: character U+0000 is not allowed in YAML"),
        ("label: \ud800\n", "line 1, column 8: character U+D800 is not allowed in YAML"),
    ],
    ids=[
        "nested-mapping-on-one-line",
        "bad-indentation",
        "tab-indentation",
        "unclosed-list",
        "unclosed-quote",
        "duplicate-key",
        "duplicate-key-in-flow-mapping",
        "two-documents",
        "undefined-alias",
        "impossible-date",
        "nul-character",
        "lone-surrogate",
    ],
)
def test_a_yaml_error_names_its_line_and_column(text: str, expected: str) -> None:
    assert problem(text) == f"{CONFIG_PATH} {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- label: baton\n", "expected `key: value` settings at the top, got a list"),
        ("just some words\n", "expected `key: value` settings at the top, got a string"),
        ("42\n", "expected `key: value` settings at the top, got a number"),
        ("true\n", "expected `key: value` settings at the top, got a boolean"),
        ("2024-01-01\n", "expected `key: value` settings at the top, got a date"),
        ("x" * 10 * 1024 * 1024, "the file has 10485760 bytes, more than the 65536 allowed"),
        (b"label: " * 1024 * 1024, "the file has 7340032 bytes, more than the 65536 allowed"),
        ("label: " + "é" * 40_000, "the file has 80007 bytes, more than the 65536 allowed"),
        (b"label: \xff\xfe\n", "not UTF-8 text (byte 7 cannot be read)"),
        ("[" * 20_000 + "]" * 20_000, "nested too deeply to read"),
    ],
    ids=[
        "a-list",
        "a-string",
        "a-number",
        "a-boolean",
        "a-date",
        "ten-megabytes",
        "seven-megabytes-of-bytes",
        "counted-in-bytes-not-characters",
        "not-utf8",
        "deeply-nested",
    ],
)
def test_odd_input_gets_a_clear_error(text: str | bytes, expected: str) -> None:
    assert problem(text) == f"{CONFIG_PATH}: {expected}"


yaml_like_text = st.text(
    alphabet=st.sampled_from(list("abelmodx_:-[]{}#&*!|>'\"%@`,?\n\t 0123456789./")), max_size=200
)


@settings(max_examples=300, deadline=None)
@given(text=yaml_like_text | st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str | bytes) -> None:
    try:
        parse_config(text)
    except ConfigError as error:
        message = str(error)
    else:
        message = CONFIG_PATH
    assert message.startswith(CONFIG_PATH)
