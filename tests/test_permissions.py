"""Who may command Baton: one test per permission level GitHub reports."""

from __future__ import annotations

import pytest

from bot.github.permissions import may_command


@pytest.mark.parametrize(
    ("role_name", "permission", "allowed"),
    [
        ("admin", "admin", True),
        ("maintain", "write", True),
        ("write", "write", True),
        ("triage", "read", False),
        ("read", "read", False),
        ("none", "none", False),
    ],
    ids=["admin", "maintain", "write", "triage", "read", "none"],
)
def test_each_level(role_name: str, permission: str, allowed: bool) -> None:
    assert may_command(role_name, permission) is allowed


@pytest.mark.parametrize(
    ("role_name", "permission", "allowed"),
    [
        (None, "write", True),
        (None, "read", False),
        ("security-reviewer", "read", False),
        ("release-manager", "write", True),
        (None, None, False),
        ("superuser", "root", False),
    ],
    ids=[
        "older answer with write",
        "older answer with read",
        "custom role based on read",
        "custom role based on write",
        "nothing reported",
        "unknown levels",
    ],
)
def test_older_answers_custom_roles_and_unknown_levels(
    role_name: str | None, permission: str | None, allowed: bool
) -> None:
    assert may_command(role_name, permission) is allowed
