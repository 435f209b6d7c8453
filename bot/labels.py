"""The trigger label on every repository the App is installed on, so that a newcomer finds the
label that starts Baton already in the issue's label list.

When an installation brings repositories (`installation.created`, `installation_repositories.
added`), one job per repository reads its `label` from `.github/baton.yml` (default `baton`) and
creates it if missing. The job is safe to run again: a label that is there is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlmodel import Session

from bot.events import RepositoryRef
from bot.executor import JobContext, enqueue
from bot.github.scopes import PLAN, TokenScope
from bot.runs import DEFAULT_LABEL
from bot.steering import read_config
from bot.store.models import InstallationRepository

log = logging.getLogger(__name__)

LABEL_JOB = "create_trigger_label"
LABEL_COLOR = "5319e7"
LABEL_DESCRIPTION = "Baton plans this issue and works on it"


def queue_trigger_labels(session: Session, repositories: Iterable[RepositoryRef]) -> None:
    """Queue creating the trigger label on each repository, in the caller's transaction."""
    for repository in repositories:
        enqueue(session, LABEL_JOB, repository_id=repository.id)


async def create_trigger_label(context: JobContext, repository_id: int) -> None:
    """Create the repository's trigger label unless it has it (or was removed meanwhile)."""
    scope = await context.store.run(lambda session: _installed(session, repository_id))
    if scope is None:
        log.info("repository %d is no longer installed; no label made", repository_id)
        return
    repo = context.integrations.repo_client(scope)
    config, _ = await read_config(repo)
    # A config with a problem starts runs with the default label (`steering.admit`): make that.
    name = config.label if config else DEFAULT_LABEL
    if await repo.ensure_label(name, LABEL_COLOR, LABEL_DESCRIPTION):
        log.info("created the label %r in %s", name, scope.repository)


def _installed(session: Session, repository_id: int) -> TokenScope | None:
    """A token scope for the repository while it is installed: read its config, write a label
    (what admitting a label needs too)."""
    row = session.get(InstallationRepository, repository_id)
    if row is None or row.removed_at is not None:
        return None
    return TokenScope(row.installation_id, row.full_name, PLAN)
