"""job locks, fences and aborts: a run's steps as short jobs, one at a time per run

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-11
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("state = 'queued'")
RUNNING = sa.text("state = 'running'")

# Plain ALTER TABLE, not batch: SQLite adds and drops these columns in place, where copying the
# table would break the deliveries trigger that inserts into it (see 0001).


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lock", sa.String(length=128), nullable=True))
    op.add_column("jobs", sa.Column("queueing_lock", sa.String(length=128), nullable=True))
    op.add_column("jobs", sa.Column("run_id", sa.String(length=32), nullable=True))
    op.add_column("jobs", sa.Column("fence", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "jobs",
        sa.Column("abort_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(op.f("ix_jobs_run_id"), "jobs", ["run_id"], unique=False)
    op.create_index(
        "uq_jobs_queueing_lock",
        "jobs",
        ["queueing_lock"],
        unique=True,
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )
    op.create_index(
        "uq_jobs_running_lock",
        "jobs",
        ["lock"],
        unique=True,
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )
    op.create_index(
        "ix_jobs_queued_lock",
        "jobs",
        ["lock", "id"],
        unique=False,
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_lock", table_name="jobs")
    op.drop_index("uq_jobs_running_lock", table_name="jobs")
    op.drop_index("uq_jobs_queueing_lock", table_name="jobs")
    op.drop_index(op.f("ix_jobs_run_id"), table_name="jobs")
    for column in ("abort_requested", "fence", "run_id", "queueing_lock", "lock"):
        op.drop_column("jobs", column)
