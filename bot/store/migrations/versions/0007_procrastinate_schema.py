"""procrastinate's schema, for many machines (PostgreSQL only)

procrastinate does not record which of its own migrations ran, so Baton owns its schema here:
this revision applies the schema of the procrastinate release pinned in pyproject.toml (3.10),
read from the installed package rather than copied into Baton. An upgrade of that pin comes
with a new revision holding procrastinate's migration SQL for the step;
`tests/test_queue_schema.py` fails when the installed release and the applied schema differ.
SQLite has no use for it: there, one process runs every job.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12
"""

import hashlib
from collections.abc import Sequence
from importlib.metadata import version
from importlib.resources import files

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The release line and the exact schema file this revision was written for: a different one is
# refused here (fail closed) and by the test, so an upgrade cannot slip in without a revision.
PROCRASTINATE_SCHEMA = "3.10"
SCHEMA_SHA256 = "c70ec4b400a60ad9592787653aae5ae77ae41bf801d56b5bd2712751a07f2009"

DROP_ALL = """
DO $$
DECLARE item record;
BEGIN
    FOR item IN SELECT p.oid::regprocedure AS name, p.prokind FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%' LOOP
        IF item.prokind = 'p' THEN
            EXECUTE 'DROP PROCEDURE IF EXISTS ' || item.name || ' CASCADE';
        ELSE
            EXECUTE 'DROP FUNCTION IF EXISTS ' || item.name || ' CASCADE';
        END IF;
    END LOOP;
    FOR item IN SELECT tablename AS name FROM pg_tables
        WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate%' LOOP
        EXECUTE 'DROP TABLE IF EXISTS ' || quote_ident(item.name) || ' CASCADE';
    END LOOP;
    FOR item IN SELECT t.typname AS name FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate%'
            AND t.typtype IN ('e', 'c') LOOP
        EXECUTE 'DROP TYPE IF EXISTS ' || quote_ident(item.name) || ' CASCADE';
    END LOOP;
END;
$$;
"""


def schema_sql() -> str:
    return (files("procrastinate.sql") / "schema.sql").read_text(encoding="utf-8")


def _execute(sql: str) -> None:
    # Through the driver, without parameters: the SQL's own % and : are not placeholders.
    op.get_bind().connection.driver_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    sql = schema_sql()
    found = hashlib.sha256(sql.encode()).hexdigest()
    if found != SCHEMA_SHA256:
        raise RuntimeError(
            f"the installed procrastinate {version('procrastinate')} has a schema this revision "
            f"was not written for (sha256 {found}); install procrastinate {PROCRASTINATE_SCHEMA}.x"
        )
    _execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _execute(DROP_ALL)
