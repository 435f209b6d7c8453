"""What an installation token may reach: one repository, with what one kind of step needs.

GitHub narrows a token to the repositories and permissions its request names, and answers 404
for any other repository and 403 for anything needing another permission
(https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app). Baton
names exactly one repository and one of the permission sets below in every token request, so a
token that leaks (into a log, a model's context, a worker's output) opens one repository for one
kind of work, for at most an hour.

| call Baton makes                                  | permission           |
|---------------------------------------------------|----------------------|
| repository, collaborator permission               | metadata: read       |
| `.github/baton.yml`, git fetch and clone          | contents: read       |
| commits on the run branch (Git Data API)          | contents: write      |
| issue, its comments; comment, edit, react         | issues: read / write |
| find and create the trigger label                 | issues: read / write |
| pull requests, reviews, review comments           | pull_requests: read  |
| open the draft PR, edit its body, reply in thread | pull_requests: write |
| find, create and update the `baton` check run     | checks: write        |
| other apps' check runs and their annotations      | checks: read         |
| Actions job logs; re-run a failed job             | actions: write       |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Access = Literal["read", "write"]


@dataclass(frozen=True)
class Permissions:
    """The GitHub App permissions one token asks for; a permission left None is withheld.

    GitHub gives every repository token metadata:read whatever is asked; it is named here so the
    request says all the token can do.
    """

    contents: Access | None = None
    issues: Access | None = None
    pull_requests: Access | None = None
    checks: Access | None = None
    actions: Access | None = None
    metadata: Access = "read"

    def as_request(self) -> dict[str, str]:
        """The `permissions` object of a token request: each granted permission and its level."""
        return {name: level for name, level in asdict(self).items() if level is not None}

    def __str__(self) -> str:
        return ", ".join(f"{name}:{level}" for name, level in sorted(self.as_request().items()))


# Admitting a label, obeying slash commands, planning: read the code and the issue, and speak on
# the issue (status comment, replies, reactions). Nothing pushed, no pull request, no check run.
# Also making a new repository's trigger label: its name is in the config, the label an issue's.
PLAN = Permissions(contents="read", issues="write")
# Turning a review into tasks: read the code, the review and its comments; write nothing (the
# execution that follows replies in the threads with its own token).
READ_REVIEW = Permissions(contents="read", pull_requests="read")
# Executing a plan, first or after a review: push the run branch, open and update the draft pull
# request and reply in its review threads, keep the status comment and the check run current.
EXECUTE = Permissions(contents="write", issues="write", pull_requests="write", checks="write")
# A failing CI on the pull request: read the checks, their annotations and Actions logs, re-run
# a job that failed for no reason of the run's, and hand over on the pull request when fixes
# did not help. The fix tasks that follow run with EXECUTE.
FIX_CI = Permissions(contents="read", issues="write", checks="read", actions="write")


@dataclass(frozen=True)
class TokenScope:
    """A token of one installation for one repository (`owner/name`) with `permissions`.

    Equal scopes share one cached token; any difference gets a token of its own.
    """

    installation_id: int
    repository: str
    permissions: Permissions

    def __post_init__(self) -> None:
        owner, _, name = self.repository.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(
                f"a token scope needs a repository as 'owner/name', not {self.repository!r}"
            )

    @property
    def repository_name(self) -> str:
        """The repository's name without its owner, as a token request names it."""
        return self.repository.partition("/")[2]

    def __str__(self) -> str:
        return f"{self.repository} ({self.permissions}) of installation {self.installation_id}"
