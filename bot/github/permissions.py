"""Who may command Baton: people with write access or more to the repository."""

from __future__ import annotations

# GitHub's repository roles, weakest first. `role_name` names all five; the older `permission`
# field of the same answer folds maintain into write and triage into read.
ROLES = ("none", "read", "triage", "write", "maintain", "admin")
COMMANDING = frozenset({"write", "maintain", "admin"})


def may_command(role_name: str | None, permission: str | None = None) -> bool:
    """True for write, maintain and admin; false for triage, read, none and anything unknown.

    `role_name` and `permission` are the fields of GitHub's "collaborator permission" answer;
    `role_name` wins when present. A custom role GitHub reports by its own name is refused here:
    its base permission arrives in `permission`, which is consulted then.
    """
    for level in (role_name, permission):
        if level in ROLES:
            return level in COMMANDING
    return False
