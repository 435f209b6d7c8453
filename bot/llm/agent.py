"""The agent loop: turns of a model with tools until it calls a finishing tool, within limits.

Mistakes a model can fix are sent back as tool errors naming the problem: arguments that are not
a JSON object, an unknown tool, a finishing tool whose input fails its schema, a turn with no
tool call. Each counts against a repair limit; past it the loop fails with the last problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from bot.llm.types import (
    Message,
    Model,
    ToolCall,
    ToolResult,
    ToolResults,
    ToolSpec,
    TurnRequest,
    Usage,
    UserMessage,
    arguments_problem,
)
from bot.tracing import tool_span

ToolHandler = Callable[[Mapping[str, Any]], Awaitable[str]]


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


class AgentFailed(Exception):
    """The loop ended without a valid finishing call; the message says why."""


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    run: ToolHandler


class FinishRejected(AgentFailed):
    """The finishing input kept failing its checks; `problems` are the last round's."""

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Finisher:
    """A finishing tool: its input, validated by `schema` then `check`, is the loop's result.

    `check` returns the problems that make an input unusable; they go back to the model, for at
    most `max_rejections` rounds, then the loop fails with FinishRejected naming them all.
    """

    name: str
    description: str
    schema: type[BaseModel]
    check: Callable[[Any], Sequence[str]] | None = None
    max_rejections: int = 2

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.schema.model_json_schema())


class Limits(NamedTuple):
    max_turns: int = 40
    max_repairs: int = 3
    max_tokens_per_turn: int = 8192
    wall_seconds: float | None = None


class Finished(NamedTuple):
    tool: str
    value: BaseModel
    turns: int
    usage: Usage


class _Outcome(NamedTuple):
    result: ToolResult
    finished: tuple[str, BaseModel] | None = None  # the finishing tool's name and its input
    problem: str | None = None


class Agent:
    """One conversation: a model, its tools and finishers, and the stable prompt prefix."""

    def __init__(
        self,
        model: Model,
        system: str,
        tools: Sequence[Tool],
        finishers: Sequence[Finisher],
        context: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> None:
        self.model = model
        self.system = system
        self.context = tuple(context)
        self.limits = limits or Limits()
        self.tools = {tool.spec.name: tool for tool in tools}
        self.finishers = {finisher.name: finisher for finisher in finishers}
        self._rejections = 0
        self.specs = tuple(
            [tool.spec for tool in tools] + [finisher.spec for finisher in finishers]
        )

    async def run(self, prompt: str) -> Finished:
        """Turns until a valid finishing call; AgentFailed past the turn, repair or time limit.

        The time limit holds inside a turn too: a model call or a tool still going at the
        deadline is cancelled (a sandboxed command is killed)."""
        wall = self.limits.wall_seconds
        if wall is None:
            return await self._turns(prompt)
        limit = asyncio.timeout(wall)
        try:
            async with limit:
                return await self._turns(prompt)
        except TimeoutError:
            if not limit.expired():
                raise  # a timeout of something inside, not this limit
            raise AgentFailed(f"no finishing call within {wall:.3g} s") from None

    async def _turns(self, prompt: str) -> Finished:
        messages: list[Message] = [UserMessage(prompt)]
        usage = Usage()
        repairs = 0
        self._rejections = 0
        for number in range(1, self.limits.max_turns + 1):
            turn = await self.model.turn(self._request(messages))
            usage += turn.usage
            messages.append(turn.as_message())
            outcomes = [await self._call(call) for call in turn.tool_calls]
            finished = next((o.finished for o in outcomes if o.finished), None)
            if finished is not None:
                return Finished(*finished, turns=number, usage=usage)
            problems = [o.problem for o in outcomes if o.problem] or self._no_call(outcomes)
            if problems:
                repairs += 1
                if repairs > self.limits.max_repairs:
                    raise AgentFailed(
                        f"{self.model.name} made the same kind of mistake {repairs} times; "
                        f"the last: {problems[-1]}"
                    )
            messages.append(self._reply(outcomes))
        raise AgentFailed(f"no finishing call within {self.limits.max_turns} turns")

    def _request(self, messages: list[Message]) -> TurnRequest:
        return TurnRequest(
            system=self.system,
            messages=tuple(messages),
            tools=self.specs,
            context=self.context,
            max_tokens=self.limits.max_tokens_per_turn,
        )

    async def _call(self, call: ToolCall) -> _Outcome:
        with tool_span(call.name, call.id):
            return await self._answer(call)

    async def _answer(self, call: ToolCall) -> _Outcome:
        if call.arguments is None:
            problem = f"{call.name}: {arguments_problem(call.raw_arguments)}"
            return _Outcome(ToolResult(call.id, problem, is_error=True), problem=problem)
        if call.name in self.finishers:
            return self._finish(call, call.arguments)
        tool = self.tools.get(call.name)
        if tool is None:
            problem = f"there is no tool named {call.name!r}; the tools are {self._names()}"
            return _Outcome(ToolResult(call.id, problem, is_error=True), problem=problem)
        try:
            return _Outcome(ToolResult(call.id, await tool.run(call.arguments)))
        except ToolError as error:
            return _Outcome(ToolResult(call.id, str(error), is_error=True))

    def _finish(self, call: ToolCall, arguments: Mapping[str, Any]) -> _Outcome:
        try:
            value = self.finishers[call.name].schema.model_validate(dict(arguments))
        except ValidationError as error:
            problem = f"{call.name}: the input does not match its schema: {_describe(error)}"
            return _Outcome(ToolResult(call.id, problem, is_error=True), problem=problem)
        problems = self._checked(self.finishers[call.name], value)
        if problems:
            listed = "\n".join(f"- {problem}" for problem in problems)
            text = f"{call.name} was not accepted:\n{listed}\nFix these and call it again."
            return _Outcome(ToolResult(call.id, text, is_error=True))
        return _Outcome(ToolResult(call.id, "accepted"), finished=(call.name, value))

    def _checked(self, finisher: Finisher, value: BaseModel) -> Sequence[str]:
        problems = finisher.check(value) if finisher.check else ()
        if problems:
            self._rejections += 1
            if self._rejections > finisher.max_rejections:
                raise FinishRejected(
                    f"{finisher.name} was still not acceptable after "
                    f"{finisher.max_rejections} rounds of feedback",
                    problems,
                )
        return problems

    def _no_call(self, outcomes: list[_Outcome]) -> list[str]:
        if outcomes:
            return []
        return [f"the turn ended without a tool call; finish with {self._finisher_names()}"]

    def _reply(self, outcomes: list[_Outcome]) -> Message:
        if not outcomes:
            return UserMessage(
                f"Continue with the tools, and finish by calling {self._finisher_names()}."
            )
        return ToolResults(tuple(outcome.result for outcome in outcomes))

    def _names(self) -> str:
        return ", ".join(spec.name for spec in self.specs)

    def _finisher_names(self) -> str:
        return " or ".join(self.finishers)


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "input"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
