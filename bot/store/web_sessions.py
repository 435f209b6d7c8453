"""Sessions of people signed in with GitHub, in the database so that they outlive a restart and
serve every `baton serve` behind a load balancer. A row is found by a digest of the cookie's
secret; the secret itself is never stored, so a copy of the database opens no session."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlmodel import Session, col, delete

from bot.store.models import WebSession
from bot.store.types import utcnow


def session_digest(secret: str) -> str:
    """The row id for a cookie's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def open_web_session(
    session: Session, login: str, repositories: frozenset[str], lifetime: timedelta
) -> str:
    """A new session's secret, for its cookie; expired rows are cleared on the way."""
    forget_expired(session)
    secret = secrets.token_urlsafe(32)
    row = WebSession(
        id_hash=session_digest(secret),
        login=login,
        repositories=sorted(repositories),
        expires_at=utcnow() + lifetime,
    )
    session.add(row)
    return secret


def find_web_session(session: Session, secret: str) -> WebSession | None:
    """The live session whose cookie carries `secret`, else None."""
    row = session.get(WebSession, session_digest(secret))
    if row is None or row.expires_at <= utcnow():
        return None
    return row


def close_web_session(session: Session, secret: str) -> None:
    session.exec(delete(WebSession).where(col(WebSession.id_hash) == session_digest(secret)))


def forget_expired(session: Session) -> None:
    session.exec(delete(WebSession).where(col(WebSession.expires_at) <= utcnow()))
