"""Models through the real Anthropic and OpenAI SDKs against the model double."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import sqlalchemy as sa

from bot.attempts import AttemptStopped, within_budget
from bot.llm.agent import Agent, AgentFailed, Finisher, Limits, Tool
from bot.llm.anthropic_adapter import AnthropicModel
from bot.llm.budget import (
    Budget,
    BudgetExceeded,
    BudgetLimits,
    DailyBudgetExceeded,
    InFlight,
    day_start,
)
from bot.llm.metered import MeteredModel
from bot.llm.openai_adapter import OpenAIModel
from bot.llm.pricing import LIST_PRICES, Price, PriceTable
from bot.llm.recording import StoreRecorder, daily_cap, run_spend, task_spend
from bot.llm.registry import make_model, model_name_for
from bot.llm.types import Model, ModelFailed, ToolSpec, Turn, TurnRequest, Usage, UserMessage
from bot.plan.schema import Plan
from bot.settings import Settings, SettingsError, load_settings
from bot.store.db import Store
from bot.store.models import AttemptStatus, ModelCall, PlanRevision, Run, Task, TaskAttempt
from tests.doubles.models import (
    ModelDouble,
    ModelError,
    ModelReply,
    RecordedCall,
    ScriptedToolCall,
)

PLAN = {
    "summary": "Add a dial widget.",
    "tasks": [
        {
            "id": "T1",
            "title": "Add the dial",
            "role": "implementer",
            "description": "Render a dial.",
            "depends_on": [],
            "files": ["src/widgets/dial.py"],
            "context_files": ["src/widgets/__init__.py"],
            "acceptance": "render_dial returns markup",
        }
    ],
}
BAD_PLAN = {**PLAN, "tasks": [{**PLAN["tasks"][0], "role": "wizard"}]}  # type: ignore[dict-item]
SONNET = "claude-sonnet-4-6"


def schema(**properties: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": list(properties),
    }


class ReadOnlyRepository:
    """Two planner tools over a fixed set of files, remembering what was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.files = {"README.md": "# Widgets\n"}

    async def read_file(self, arguments: Mapping[str, Any]) -> str:
        self.asked.append(("read_file", dict(arguments)))
        return self.files.get(str(arguments["path"]), "no such file")

    async def search(self, arguments: Mapping[str, Any]) -> str:
        self.asked.append(("search", dict(arguments)))
        return json.dumps([{"path": "README.md", "line": 1}])

    def tools(self) -> list[Tool]:
        return [
            Tool(ToolSpec("read_file", "Read a file.", schema(path="string")), self.read_file),
            Tool(ToolSpec("search", "Search the code.", schema(pattern="string")), self.search),
        ]


SUBMIT_PLAN = Finisher("submit_plan", "Submit the plan.", Plan)


def planner(model: Model, repository: ReadOnlyRepository, max_repairs: int = 3) -> Agent:
    return Agent(
        model,
        "You plan work on an issue.",
        repository.tools(),
        [SUBMIT_PLAN],
        context=["repository map: README.md"],
        limits=Limits(max_turns=6, max_repairs=max_repairs),
    )


class TurnLog:
    """A model that remembers the turns of the model it wraps."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.turns: list[Turn] = []

    @property
    def name(self) -> str:
        return self.model.name

    async def turn(self, request: TurnRequest) -> Turn:
        turn = await self.model.turn(request)
        self.turns.append(turn)
        return turn


@pytest.fixture
def models() -> Iterator[ModelDouble]:
    with ModelDouble() as double:
        yield double


def anthropic_model(models: ModelDouble, name: str = SONNET, retries: int = 2) -> AnthropicModel:
    client = anthropic.AsyncAnthropic(base_url=models.url, api_key="test", max_retries=retries)
    return AnthropicModel(name, client)


def openai_model(models: ModelDouble, name: str = "gpt-5", retries: int = 2) -> OpenAIModel:
    client = openai.AsyncOpenAI(base_url=models.url + "/v1", api_key="test", max_retries=retries)
    return OpenAIModel(name, client)


def conversation() -> list[ModelReply]:
    return [
        ModelReply("Reading first.", [ScriptedToolCall("read_file", {"path": "README.md"})]),
        ModelReply(tool_calls=[ScriptedToolCall("search", {"pattern": "render"})]),
        ModelReply("Here is the plan.", [ScriptedToolCall("submit_plan", PLAN)]),
    ]


def shape(turns: list[Turn]) -> list[tuple[str, str, list[tuple[str, Any]]]]:
    """What a turn said, without ids the providers make up."""
    return [
        (turn.stop_reason, turn.text, [(c.name, c.arguments) for c in turn.tool_calls])
        for turn in turns
    ]


async def test_one_scripted_conversation_gives_the_same_turns_through_both_adapters(
    models: ModelDouble,
) -> None:
    outcomes = []
    for make in (anthropic_model, openai_model):
        models.add(*conversation())
        log = TurnLog(make(models))
        repository = ReadOnlyRepository()
        finished = await planner(log, repository).run("Plan issue #42.")
        outcomes.append((shape(log.turns), repository.asked, finished))
    (anthropic_turns, anthropic_asked, by_anthropic), (openai_turns, openai_asked, by_openai) = (
        outcomes
    )
    assert anthropic_turns == openai_turns
    assert [stop for stop, _, _ in anthropic_turns] == ["tool_use"] * 3
    assert (
        anthropic_asked
        == openai_asked
        == [
            ("read_file", {"path": "README.md"}),
            ("search", {"pattern": "render"}),
        ]
    )
    assert by_anthropic.value == by_openai.value == Plan.model_validate(PLAN)
    assert (by_anthropic.tool, by_anthropic.turns) == ("submit_plan", 3)
    # The tool results went back in each provider's own shape.
    anthropic_last, openai_last = models.calls[2].json, models.calls[5].json
    result = anthropic_last["messages"][-1]["content"][0]
    assert (result["type"], result["content"]) == (
        "tool_result",
        '[{"path": "README.md", "line": 1}]',
    )
    assert openai_last["messages"][-1]["role"] == "tool"


def raw_value(body: bytes, key: str) -> bytes:
    """The exact bytes of a top-level JSON value in a request body."""
    text = body.decode()
    start = text.index(f'"{key}":') + len(key) + 3
    start += len(text[start:]) - len(text[start:].lstrip())
    _, end = json.JSONDecoder().raw_decode(text, start)
    return body[len(text[:start].encode()) : len(text[:end].encode())]


@pytest.fixture
def store(engine: sa.Engine, database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.close()


def attempt_rows(store: Store) -> tuple[str, int, int]:
    """A run, one task of its plan and the task's first attempt; their ids."""
    with store.session() as session:
        run = Run(
            id="run1", repository_id=712345678, repository="octo-org/widgets", issue_number=42
        )
        session.add(run)
        session.flush()
        revision = PlanRevision(run_id=run.id, number=1, plan=PLAN)
        session.add(revision)
        session.flush()
        assert revision.id is not None
        task = Task(run_id=run.id, revision_id=revision.id, key="T1", title="Dial", role="planner")
        session.add(task)
        session.flush()
        assert task.id is not None
        attempt = TaskAttempt(task_id=task.id, run_id=run.id, number=1, role="planner")
        session.add(attempt)
        session.commit()
        assert attempt.id is not None
        return run.id, task.id, attempt.id


def metered(
    model: Model, store: Store, ids: tuple[str, int, int], limits: BudgetLimits | None = None
) -> MeteredModel:
    run_id, task_id, attempt_id = ids
    recorder = StoreRecorder(store, "planner", run_id, task_id, attempt_id)
    return MeteredModel(model, PriceTable(), Budget(limits or BudgetLimits()), recorder)


def model_calls(store: Store) -> list[ModelCall]:
    with store.session() as session:
        return list(session.exec(sa.select(ModelCall).order_by(ModelCall.id)).scalars())  # type: ignore[call-overload]


async def test_the_second_anthropic_call_reuses_the_cached_prefix_and_is_priced_for_it(
    models: ModelDouble, store: Store
) -> None:
    ids = attempt_rows(store)
    model = metered(anthropic_model(models), store, ids)
    models.add(
        ModelReply("Plan.", [ScriptedToolCall("submit_plan", PLAN)], cache_write_tokens=5000),
        ModelReply("Plan.", [ScriptedToolCall("submit_plan", PLAN)], cache_read_tokens=5000),
    )
    # Two sibling conversations of one run: the same system prompt, context and tools.
    await planner(model, ReadOnlyRepository()).run("Plan task T2.")
    await planner(model, ReadOnlyRepository()).run("Plan task T3, a different one.")

    first, second = models.calls
    for key in ("system", "tools"):
        assert raw_value(first.body, key) == raw_value(second.body, key)
    assert first.json["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first.json["messages"] != second.json["messages"]

    written, read = model_calls(store)
    assert (written.cache_write_tokens, read.cache_read_tokens) == (5000, 5000)
    price = LIST_PRICES["anthropic/claude-sonnet-4"]
    expected = (100 * price.input + 20 * price.output + 5000 * price.input * 0.1) / 1e6
    assert read.cost_usd == pytest.approx(expected)
    assert written.cost_usd == pytest.approx((100 * 3 + 20 * 15 + 5000 * 3.75) / 1e6)


@pytest.mark.parametrize("make", [anthropic_model, openai_model], ids=["anthropic", "openai"])
async def test_a_429_then_success_is_one_recorded_call_with_its_retry(
    models: ModelDouble, store: Store, make: Any
) -> None:
    ids = attempt_rows(store)
    models.add(ModelError(429, retry_after=0.01), ModelReply("done"))
    turn = await metered(make(models), store, ids).turn(first_request())
    assert turn.text == "done"
    (call,) = model_calls(store)
    assert (call.retries, call.error, call.input_tokens) == (1, None, 100)
    assert len(models.calls) == 2


@pytest.mark.parametrize("make", [anthropic_model, openai_model], ids=["anthropic", "openai"])
async def test_three_server_errors_fail_clearly_and_leave_one_whole_record(
    models: ModelDouble, store: Store, make: Any
) -> None:
    ids = attempt_rows(store)
    models.add(*[ModelError(500, retry_after=0.01)] * 3)
    model = make(models)
    with pytest.raises(ModelFailed, match=rf"{model.name}: the provider answered 500 .* 2 retries"):
        await metered(model, store, ids).turn(first_request())
    (call,) = model_calls(store)
    assert call.retries == 2
    assert "500" in (call.error or "")
    assert (call.input_tokens, call.output_tokens, call.cost_usd) == (0, 0, 0.0)
    assert len(models.calls) == 3


def first_request() -> TurnRequest:
    return TurnRequest(system="You help.", messages=(UserMessage("hello"),), max_tokens=64)


async def test_a_task_whose_next_call_would_pass_its_budget_stops_before_it(
    models: ModelDouble, store: Store
) -> None:
    ids = attempt_rows(store)
    _, task_id, attempt_id = ids
    models.add(
        ModelReply("Reading.", [ScriptedToolCall("read_file", {"path": "README.md"})]),
        ModelReply("Plan.", [ScriptedToolCall("submit_plan", PLAN)]),
    )
    # The first call may use 662 tokens (its prompt, estimated, and 64 out) and uses 120; the
    # second may use 737 more, which would pass 750.
    limits = BudgetLimits(task_tokens=750)
    agent = Agent(
        metered(anthropic_model(models), store, ids, limits),
        "You plan.",
        ReadOnlyRepository().tools(),
        [SUBMIT_PLAN],
        limits=Limits(max_tokens_per_turn=64),
    )
    with pytest.raises(AttemptStopped, match="budget: the next call needs up to"):
        await within_budget(store, attempt_id, lambda: agent.run("Plan."))

    assert len(models.calls) == 1
    assert models.remaining == 1
    with store.session() as session:
        attempt = session.get(TaskAttempt, attempt_id)
        task = session.get(Task, task_id)
        assert attempt is not None
        assert task is not None
        assert attempt.status == AttemptStatus.escalated
        assert "task has used 120 of its 750" in (attempt.error or "")
        assert (attempt.input_tokens, attempt.output_tokens) == (100, 20)
        # The attempt says why it stopped; moving the task is the attempt step's, through the
        # lifecycle (tests/test_budgets.py shows the task escalated end to end).
        assert task.state == "pending"
        assert task_spend(session, task_id).tokens == 120


async def test_broken_tool_json_and_an_invalid_plan_are_repaired_through_feedback(
    models: ModelDouble,
) -> None:
    models.add(
        ModelReply(tool_calls=[ScriptedToolCall("read_file", '{"path": "README.md"')]),
        ModelReply(tool_calls=[ScriptedToolCall("submit_plan", BAD_PLAN)]),
        ModelReply(tool_calls=[ScriptedToolCall("submit_plan", PLAN)]),
    )
    finished = await planner(openai_model(models), ReadOnlyRepository()).run("Plan.")
    assert finished.value == Plan.model_validate(PLAN)
    assert finished.turns == 3
    json_feedback = models.calls[1].json["messages"][-1]
    assert json_feedback["role"] == "tool"
    assert "not valid JSON" in json_feedback["content"]
    schema_feedback = models.calls[2].json["messages"][-1]["content"]
    assert "tasks.0.role" in schema_feedback
    assert "implementer" in schema_feedback


async def test_an_invalid_plan_is_repaired_through_anthropic_too(models: ModelDouble) -> None:
    models.add(
        ModelReply(tool_calls=[ScriptedToolCall("submit_plan", BAD_PLAN)]),
        ModelReply(tool_calls=[ScriptedToolCall("submit_plan", PLAN)]),
    )
    finished = await planner(anthropic_model(models), ReadOnlyRepository()).run("Plan.")
    assert finished.turns == 2
    feedback = models.calls[1].json["messages"][-1]["content"][0]
    assert feedback["is_error"] is True
    assert "tasks.0.role" in feedback["content"]


async def test_past_the_repair_limit_the_error_names_what_was_wrong(models: ModelDouble) -> None:
    models.add(
        ModelReply(tool_calls=[ScriptedToolCall("read_file", "not json")]),
        ModelReply(tool_calls=[ScriptedToolCall("submit_plan", BAD_PLAN)]),
    )
    with pytest.raises(AgentFailed, match=r"the last: submit_plan: .*tasks\.0\.role"):
        await planner(openai_model(models), ReadOnlyRepository(), max_repairs=1).run("Plan.")
    assert models.remaining == 0


async def test_the_turn_limit_ends_a_loop_that_never_finishes(models: ModelDouble) -> None:
    reading = ModelReply(tool_calls=[ScriptedToolCall("read_file", {"path": "README.md"})])
    models.add(*[reading] * 6)
    with pytest.raises(AgentFailed, match="no finishing call within 6 turns"):
        await planner(anthropic_model(models), ReadOnlyRepository()).run("Plan.")


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("anthropic/claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4"),
        ("anthropic/claude-opus-4-6", "anthropic/claude-opus-4-6"),
        ("openai/gpt-5.3-codex", "openai/gpt-5"),
        ("openai/gpt-5-mini-2025-08-07", "openai/gpt-5-mini"),
    ],
)
def test_models_are_priced_by_their_family(model: str, family: str) -> None:
    assert PriceTable().price(model) == LIST_PRICES[family]


@pytest.mark.parametrize("model", ["openai/meta-llama/Llama-3.3-70B", "openai/gpt-50"])
def test_an_unknown_model_records_tokens_and_a_null_cost(model: str) -> None:
    assert PriceTable().cost(model, Usage(1000, 1000)) is None


def test_a_deployment_can_override_a_price() -> None:
    prices = PriceTable().with_overrides({"openai/meta-llama/Llama-3.3-70B": Price(0.5, 0.5)})
    assert prices.cost("openai/meta-llama/Llama-3.3-70B", Usage(1_000_000, 0)) == 0.5
    assert prices.cost("anthropic/claude-sonnet-4-5", Usage(1_000_000, 0)) == 3.0


def test_settings_override_prices_and_a_bad_entry_names_the_model() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_prices={"openai/local-coder": {"input": 0.2, "output": 0.4}},
    )
    assert PriceTable.from_settings(settings).cost("openai/local-coder", Usage(0, 10**6)) == 0.4
    broken = Settings(_env_file=None, model_prices={"openai/x": {"inptu": 1.0}})  # type: ignore[call-arg]
    with pytest.raises(SettingsError, match=r"BATON_MODEL_PRICES\['openai/x'\]: .*inptu"):
        PriceTable.from_settings(broken)


def test_each_role_takes_the_repository_choice_then_the_settings() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        orchestrator_model="anthropic/claude-opus-4-6",
        worker_model="openai/gpt-5.3-codex",
    )
    chosen = {"test_writer": "anthropic/claude-haiku-4-5"}
    assert model_name_for("orchestrator", settings, chosen) == "anthropic/claude-opus-4-6"
    assert model_name_for("implementer", settings, chosen) == "openai/gpt-5.3-codex"
    assert model_name_for("test_writer", settings, chosen) == "anthropic/claude-haiku-4-5"


def test_a_model_needs_its_providers_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    bare = load_settings()
    with pytest.raises(SettingsError, match="ANTHROPIC_API_KEY is not set"):
        make_model("anthropic/claude-opus-4-6", bare)
    with pytest.raises(SettingsError, match="OPENAI_API_KEY is not set"):
        make_model("openai/gpt-5", bare)
    with pytest.raises(SettingsError, match="unknown provider 'mistral'"):
        make_model("mistral/large", bare)
    # A local OpenAI-compatible server needs its address, not a key.
    local = load_settings(openai_base_url="http://127.0.0.1:11434/v1")
    assert make_model("openai/meta-llama/Llama-3.3-70B", local).name == (
        "openai/meta-llama/Llama-3.3-70B"
    )


def test_provider_keys_come_from_dotenv_and_stay_out_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "ANTHROPIC_API_KEY=sk-ant-from-dotenv\nANTHROPIC_BASE_URL=http://127.0.0.1:9/\n"
    )

    model = make_model("anthropic/claude-opus-4-6", load_settings())

    assert isinstance(model, AnthropicModel)
    client = model._client
    assert client.api_key == "sk-ant-from-dotenv"
    assert str(client.base_url).rstrip("/") == "http://127.0.0.1:9"
    assert "ANTHROPIC_API_KEY" not in os.environ


# Room for one call of `first_request`'s size in a run (about $0.0010 projected), not two.
ONE_CALL_RUN_BUDGET = BudgetLimits(run_usd=0.0013)


def task_models_of_one_run(
    models: ModelDouble, store: Store, in_flight: InFlight | None = None
) -> Callable[[], MeteredModel]:
    """Makes the metered model of another task of one run, under `ONE_CALL_RUN_BUDGET`."""
    ids = attempt_rows(store)

    async def run_spent() -> float:
        return await store.run(lambda session: run_spend(session, ids[0]))

    def task_model() -> MeteredModel:
        recorder = StoreRecorder(store, "implementer", *ids)
        budget = Budget(ONE_CALL_RUN_BUDGET, run_spent=run_spent, in_flight=in_flight)
        return MeteredModel(anthropic_model(models), PriceTable(), budget, recorder)

    return task_model


async def test_the_run_budget_counts_what_parallel_tasks_spent_meanwhile(
    models: ModelDouble, store: Store
) -> None:
    task_model = task_models_of_one_run(models, store)
    first, second = task_model(), task_model()  # two tasks of one run, started together
    models.add(ModelReply("done"))
    await first.turn(first_request())
    with pytest.raises(BudgetExceeded, match="the run has spent \\$0.0006 of its \\$0.00"):
        await second.turn(first_request())
    assert len(models.calls) == 1


async def held_until_one_is_refused(
    models: ModelDouble, *turns: Coroutine[Any, Any, Turn]
) -> list[Turn | BaseException]:
    """Run `turns` at once, the model holding every call it gets until one turn has been
    refused, so a call is surely in flight while the other is checked; their outcomes."""
    release = threading.Event()

    def held(call: RecordedCall) -> ModelReply:
        release.wait(60)
        return ModelReply("done")

    models.policy = held
    running = [asyncio.ensure_future(turn) for turn in turns]
    try:
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    finally:
        release.set()
    return list(await asyncio.gather(*running, return_exceptions=True))


async def test_calls_in_flight_at_once_cannot_together_pass_the_run_budget(
    models: ModelDouble, store: Store
) -> None:
    in_flight = InFlight()  # one per run, shared by its tasks' budgets
    task_model = task_models_of_one_run(models, store, in_flight)

    outcomes = await held_until_one_is_refused(
        models, task_model().turn(first_request()), task_model().turn(first_request())
    )
    # Either may be checked first (each reads the spend in a thread): one goes, one is refused.
    passed = [outcome for outcome in outcomes if isinstance(outcome, Turn)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, BudgetExceeded)]
    assert (len(passed), len(refused)) == (1, 1), outcomes
    assert "calls in flight may cost $0.0010 more" in str(refused[0])
    assert len(models.calls) == 1
    assert in_flight.usd == 0.0  # released once the call was over


# Room for one call of `first_request`'s size in a day (about $0.0010 projected), not two.
ONE_CALL_DAY = 0.0013


def daily_capped(models: ModelDouble, store: Store, in_flight: InFlight) -> MeteredModel:
    """A model of a run of its own, under the instance's `ONE_CALL_DAY` cap."""
    settings = Settings(_env_file=None, daily_budget_usd=ONE_CALL_DAY)  # type: ignore[call-arg]
    budget = Budget(BudgetLimits(), daily=daily_cap(store, settings, in_flight))
    return MeteredModel(
        anthropic_model(models), PriceTable(), budget, StoreRecorder(store, "planner")
    )


def spent_at(store: Store, moment: datetime, usd: float, model: str = SONNET) -> None:
    """A call of another run, recorded at `moment`."""
    call = ModelCall(
        role="implementer", provider="anthropic", model=model, cost_usd=usd, created_at=moment
    )
    with store.session() as session:
        session.add(call)


async def test_the_daily_cap_counts_every_runs_calls_of_this_utc_day_only(
    models: ModelDouble, store: Store
) -> None:
    yesterday = day_start(datetime.now(UTC)) - timedelta(seconds=1)
    spent_at(store, yesterday, 5.0)  # a costly day before does not count today
    models.add(ModelReply("done"))
    await daily_capped(models, store, InFlight()).turn(first_request())

    with pytest.raises(DailyBudgetExceeded) as refused:
        await daily_capped(models, store, InFlight()).turn(first_request())
    assert "Baton's daily budget is reached: $0.0006 of its $0.00 (BATON_DAILY_BUDGET_USD)" in str(
        refused.value
    )
    assert "the operator can raise BATON_DAILY_BUDGET_USD" in str(refused.value)
    assert len(models.calls) == 1


async def test_calls_of_two_runs_in_flight_at_once_cannot_together_pass_the_daily_cap(
    models: ModelDouble, store: Store
) -> None:
    in_flight = InFlight()  # one per process, shared by every run's budgets

    outcomes = await held_until_one_is_refused(
        models,
        daily_capped(models, store, in_flight).turn(first_request()),
        daily_capped(models, store, in_flight).turn(first_request()),
    )
    # Whichever is checked second is refused.
    (made,) = [outcome for outcome in outcomes if isinstance(outcome, Turn)]
    (refused,) = [outcome for outcome in outcomes if isinstance(outcome, DailyBudgetExceeded)]
    assert "(and calls in flight may cost $0.0010 more)" in str(refused)
    assert len(models.calls) == 1
    assert in_flight.usd == 0.0


async def test_a_model_of_unknown_price_is_held_to_no_dollar_limit(
    models: ModelDouble, store: Store
) -> None:
    spent_at(store, datetime.now(UTC), 1.0)  # the day's cap is passed already
    settings = Settings(_env_file=None, daily_budget_usd=ONE_CALL_DAY)  # type: ignore[call-arg]
    limits = BudgetLimits(run_usd=0.0001, task_usd=0.0001)
    budget = Budget(limits, daily=daily_cap(store, settings, InFlight()))
    unknown = anthropic_model(models, name="claude-unreleased-9")
    model = MeteredModel(unknown, PriceTable(), budget, StoreRecorder(store, "planner"))
    models.add(ModelReply("done"))

    assert (await model.turn(first_request())).text == "done"
    (_, call) = model_calls(store)
    assert call.cost_usd is None
