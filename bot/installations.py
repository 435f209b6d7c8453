"""Keeping the installations and their repositories current from `installation*` events."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, select

from bot.events import (
    InstallationEvent,
    InstallationFull,
    InstallationRepositoriesEvent,
    RepositoryRef,
)
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import Installation, InstallationRepository
from bot.store.types import utcnow


def apply_installation_event(session: Session, event: InstallationEvent) -> Installation:
    """created / deleted / suspend / unsuspend / new_permissions_accepted, applied idempotently."""
    installation = _upsert_installation(session, event.installation)
    now = utcnow()
    if event.action == "deleted":
        installation.deleted_at = now
        _mark_removed(session, installation.id, None)
    elif event.action == "suspend":
        installation.suspended_at = now
    elif event.action in ("unsuspend", "created"):
        installation.suspended_at = None
        installation.deleted_at = None
    if event.action == "created" and event.repositories is not None:
        _upsert_repositories(session, installation.id, event.repositories)
    return installation


def apply_repositories_event(
    session: Session, event: InstallationRepositoriesEvent
) -> Installation:
    """added / removed repositories of an installation."""
    installation = _upsert_installation(session, event.installation)
    _upsert_repositories(session, installation.id, event.repositories_added)
    # Recorded even if never seen before, so that their mirrors are known to be unwanted.
    _upsert_repositories(session, installation.id, event.repositories_removed)
    _mark_removed(session, installation.id, {repo.id for repo in event.repositories_removed})
    return installation


def _upsert_installation(session: Session, data: InstallationFull) -> Installation:
    # Two deliveries of a new installation may be handled at once (two processes): the row is
    # inserted unless there, never twice, then updated.
    now = utcnow()
    row = {"id": data.id, "account_login": "", "created_at": now, "updated_at": now}
    insert_ignoring_conflicts(session, Installation, [row])
    installation = session.get(Installation, data.id, populate_existing=True)
    assert installation is not None
    if data.account is not None:
        installation.account_login = data.account.login
        installation.account_type = data.account.type
    installation.repository_selection = data.repository_selection
    installation.updated_at = utcnow()
    return installation


def _upsert_repositories(
    session: Session, installation_id: int, repositories: Iterable[RepositoryRef]
) -> None:
    repositories = list(repositories)
    now = utcnow()
    rows = [
        {
            "id": data.id,
            "installation_id": installation_id,
            "full_name": data.full_name,
            "private": data.private,
            "updated_at": now,
        }
        for data in repositories
    ]
    insert_ignoring_conflicts(session, InstallationRepository, rows)
    for data in repositories:
        repository = session.get(InstallationRepository, data.id, populate_existing=True)
        assert repository is not None
        repository.installation_id = installation_id
        repository.full_name = data.full_name
        repository.private = data.private
        repository.removed_at = None
        repository.updated_at = utcnow()
    session.flush()


def _mark_removed(session: Session, installation_id: int, ids: set[int] | None) -> None:
    """Mark repositories removed: the given ids, or all of the installation's when ids is None."""
    query = select(InstallationRepository).where(
        InstallationRepository.installation_id == installation_id
    )
    for repository in session.exec(query):
        if ids is None or repository.id in ids:
            repository.removed_at = utcnow()
