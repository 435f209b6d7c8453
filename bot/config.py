"""A repository's own settings, `.github/baton.yml` (CONTRACT §4), read and checked in one place.

Every key is optional and unknown keys are refused, so a typo is reported on the issue instead of
being silently ignored. A key written with no value (`budget:`) means its default.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from bot.llm.budget import BudgetLimits
from bot.llm.pricing import Price
from bot.settings import MODEL_PROVIDERS

CONFIG_PATH = ".github/baton.yml"
# A real config is a few hundred bytes; anything this big is a mistake, not a config.
MAX_CONFIG_BYTES = 64 * 1024
# An issue comment holds 65,536 characters; a handful of problems is enough to start fixing.
MAX_REPORTED_PROBLEMS = 20
BRANCH_PREFIX_FORBIDDEN = "~^:?*[\\"


class ConfigError(ValueError):
    """`.github/baton.yml` cannot be used; the message names the file and every problem.

    `problems` holds one line per problem, without the file name, for callers that format them.
    """

    def __init__(self, problems: list[str], *, where: str = CONFIG_PATH) -> None:
        self.problems = tuple(problems)
        shown = [f"{where}: {problem}" for problem in problems[:MAX_REPORTED_PROBLEMS]]
        hidden = len(problems) - len(shown)
        if hidden:
            shown.append(f"{where}: and {hidden} more problem{'' if hidden == 1 else 's'}")
        super().__init__("\n".join(shown))


def _provider_and_model(value: str) -> str:
    provider, _, model = value.partition("/")
    if provider not in MODEL_PROVIDERS or not model:
        raise ValueError(
            f"expected 'provider/model' with provider one of {', '.join(MODEL_PROVIDERS)}, "
            f"got {value!r}"
        )
    return value


def _branch_prefix_problem(prefix: str) -> str | None:
    # Git's own rules (git check-ref-format) for the part of `{prefix}issue-12` the file sets.
    if not prefix:
        return None
    if any(character.isspace() or ord(character) < 32 for character in prefix):
        return "contains a space or control character"
    forbidden = [text for text in [*BRANCH_PREFIX_FORBIDDEN, "..", "@{", "//"] if text in prefix]
    if forbidden:
        return f"contains {' and '.join(forbidden)}"
    if prefix.startswith("/"):
        return "starts with /"
    if not prefix.endswith("/"):
        return "does not end with /"
    if any(part.startswith(".") or part.endswith(".lock") for part in prefix.split("/")):
        return "has a part that starts with . or ends with .lock"
    return None


def _usable_branch_prefix(value: str) -> str:
    problem = _branch_prefix_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} is not a usable git branch prefix: it {problem}")
    return value


ModelName = Annotated[str, AfterValidator(_provider_and_model)]
PositiveDollars = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PricePerMillion = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Section(BaseModel):
    """Strict YAML types (`"3"` is not a number), no unknown keys, and empty keys as defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class ModelChoices(_Section):
    """A `provider/model` per role; None leaves the role to the process settings."""

    orchestrator: ModelName | None = None
    implementer: ModelName | None = None
    test_writer: ModelName | None = None
    refactorer: ModelName | None = None
    static_analyst: ModelName | None = None


class BudgetConfig(_Section):
    """Limits in dollars and tokens; an unset one does not apply."""

    run_usd: PositiveDollars | None = None
    task_usd: PositiveDollars | None = None
    task_tokens: Annotated[int, Field(gt=0)] | None = None


class PriceConfig(_Section):
    """Dollars per million tokens for one model, as `bot.llm.pricing.Price` takes them."""

    input: PricePerMillion
    output: PricePerMillion
    cache_read: PricePerMillion | None = None
    cache_write: PricePerMillion | None = None

    def to_price(self) -> Price:
        return Price(self.input, self.output, self.cache_read, self.cache_write)


class RepoConfig(_Section):
    """The whole file; `RepoConfig()` is what a repository without one gets."""

    label: Annotated[str, Field(min_length=1, max_length=50)] = "baton"
    models: ModelChoices = ModelChoices()
    max_parallel: Annotated[int, Field(ge=1, le=16)] = 2
    max_tasks: Annotated[int, Field(ge=1, le=50)] = 8
    budget: BudgetConfig = BudgetConfig()
    protected_paths: list[Annotated[str, Field(min_length=1)]] = []
    setup_command: str | None = None
    test_command: str | None = None
    lint_command: str | None = None
    branch_prefix: Annotated[str, AfterValidator(_usable_branch_prefix)] = "baton/"
    review_rounds: Annotated[int, Field(ge=1, le=10)] = 3
    # Times a failing CI on the pull request becomes fix tasks before a person takes over.
    ci_fix_rounds: Annotated[int, Field(ge=0, le=10)] = 2
    # Times Baton merges a conflicting default branch into the run branch before a person does.
    merge_rounds: Annotated[int, Field(ge=0, le=10)] = 2
    prices: dict[ModelName, PriceConfig] = {}
    # Who works an approved plan: its tasks' workers, one agent, or one agent for a chain.
    mode: Literal["orchestrated", "single", "auto"] = "orchestrated"
    # The share of runs worked by one agent, drawn at random, to compare the two modes.
    baseline_share: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0

    def budget_limits(self, defaults: BudgetLimits | None = None) -> BudgetLimits:
        """The `budget:` section as the limits a `Budget` checks, each limit it leaves unset
        taken from `defaults` (the instance's, `BudgetLimits.from_settings`)."""
        budget = self.budget
        own = BudgetLimits(
            task_tokens=budget.task_tokens, task_usd=budget.task_usd, run_usd=budget.run_usd
        )
        return own if defaults is None else own.with_defaults(defaults)

    def price_overrides(self) -> dict[str, Price]:
        """The `prices:` section, ready for `PriceTable.with_overrides`."""
        return {model: price.to_price() for model, price in self.prices.items()}


def parse_config(text: str | bytes | None) -> RepoConfig:
    """The config in `text`; None (no file), an empty file or only comments give the defaults.

    Raises ConfigError, never anything else, for text that is not a usable config.
    """
    document = _load_yaml(_decoded(text))
    if document is None:
        return RepoConfig()
    if not isinstance(document, dict):
        raise ConfigError([f"expected `key: value` settings at the top, got {_kind_of(document)}"])
    try:
        return RepoConfig.model_validate(document)
    except ValidationError as error:
        problems = _in_file_order(error.errors(include_url=False, include_input=False), document)
        raise ConfigError([_describe(problem) for problem in problems]) from None


def _decoded(text: str | bytes | None) -> str:
    if text is None:
        return ""
    # "surrogatepass": a lone surrogate is counted here and refused by the YAML reader.
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"the file has {size} bytes, more than the {MAX_CONFIG_BYTES} allowed"])
    if isinstance(text, str):
        return text
    try:
        return text.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError([f"not UTF-8 text (byte {error.start} cannot be read)"]) from None


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML with two more refusals, each at its line: a key written twice in one mapping
    (YAML would keep the last silently), and a value Python cannot build (the date 2024-13-45).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            if key_node.value in seen:
                raise _marked(f"duplicate key `{key_node.value}`", key_node)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as error:
            raise _marked(f"cannot read this value: {error}", node) from None


def _marked(problem: str, node: yaml.Node) -> yaml.MarkedYAMLError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain data, no objects
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error) from None
    except yaml.reader.ReaderError as error:
        line, column = _line_and_column(text, error.position)
        raise ConfigError(
            [f"character U+{error.character:04X} is not allowed in YAML"],
            where=f"{CONFIG_PATH} line {line}, column {column}",
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"]) from None
    except RecursionError:
        raise ConfigError(["nested too deeply to read"]) from None


def _syntax_error(error: yaml.MarkedYAMLError) -> ConfigError:
    problem = error.problem or "not valid YAML"
    # "while parsing a block mapping" adds nothing; "expected a single document" does.
    if error.context and not error.context.startswith("while "):
        problem = f"{error.context}, {problem}"
    mark = error.problem_mark
    if mark is None:
        return ConfigError([problem])
    return ConfigError(
        [problem], where=f"{CONFIG_PATH} line {mark.line + 1}, column {mark.column + 1}"
    )


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


def _in_file_order(problems: list[ErrorDetails], document: dict[Any, Any]) -> list[ErrorDetails]:
    # Pydantic lists problems in field order; a person reads the file from the top.
    position = {key: index for index, key in enumerate(document)}
    return sorted(problems, key=lambda problem: position.get(problem["loc"][0], len(position)))


def _kind_of(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _describe(problem: ErrorDetails) -> str:
    location = problem["loc"]
    # A key that is not a string (`1:`, `true:`) is as unknown as a misspelt one.
    if problem["type"] in ("extra_forbidden", "invalid_key"):
        known = ", ".join(_section_at(location[:-1]).model_fields)
        key = _dotted((*location[:-1], str(location[-1])))
        return f"unknown key `{key}` (known keys: {known})"
    return f"{_dotted(location)}: {_message(problem)}"


def _message(problem: ErrorDetails) -> str:
    if problem["type"] in ("model_type", "dict_type"):
        return "Input should be a mapping of `key: value` lines"
    if problem["type"] == "value_error":
        # Our validators' own words, without pydantic's "Value error, " in front.
        return str(problem.get("ctx", {}).get("error", problem["msg"]))
    return problem["msg"]


def _dotted(location: tuple[int | str, ...]) -> str:
    # `[key]` marks a problem with a mapping's key rather than its value; the key is already named.
    parts = [f"[{part}]" if isinstance(part, int) else part for part in location if part != "[key]"]
    return ".".join(parts).replace(".[", "[")


def _section_at(location: tuple[int | str, ...]) -> type[BaseModel]:
    """The config section a key at `location` belongs to, walking fields, lists and mappings."""
    shape: Any = RepoConfig
    for part in location:
        if isinstance(shape, type) and issubclass(shape, BaseModel):
            shape = _without_none(shape.model_fields[str(part)].annotation)
        elif get_origin(shape) in (dict, list):
            shape = _without_none(get_args(shape)[-1])
    return shape if isinstance(shape, type) and issubclass(shape, BaseModel) else RepoConfig


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    members = [member for member in get_args(annotation) if member is not type(None)]
    return members[0] if len(members) == 1 else annotation
