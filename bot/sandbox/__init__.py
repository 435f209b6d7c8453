"""The sandbox for a repository's commands (CONTRACT §9): see `bot.sandbox.runner`."""

from bot.sandbox.identity import SandboxUser, sandbox_user
from bot.sandbox.limits import SandboxLimits, describe_enforcement
from bot.sandbox.runner import (
    SANDBOX_ENVIRONMENT,
    SANDBOX_HOME,
    CommandResult,
    Sandbox,
    SandboxUnavailable,
    sandbox_available,
)
from bot.sandbox.view import SHARED, WORKSPACE, SharedFolder

__all__ = [
    "SANDBOX_ENVIRONMENT",
    "SANDBOX_HOME",
    "SHARED",
    "WORKSPACE",
    "CommandResult",
    "Sandbox",
    "SandboxLimits",
    "SandboxUnavailable",
    "SandboxUser",
    "SharedFolder",
    "describe_enforcement",
    "sandbox_available",
    "sandbox_user",
]
