"""jobs relayed to procrastinate's queue, accepted commits as bundles, and where each attempt
ran (many machines)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.store.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TO_RELAY = sa.text("state = 'queued' AND relayed_at IS NULL")

# Plain ALTER TABLE, not batch, as in 0004: copying the jobs table would break the deliveries
# trigger that inserts into it.


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("relayed_at", bot.store.types.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_jobs_to_relay",
        "jobs",
        ["id"],
        unique=False,
        sqlite_where=TO_RELAY,
        postgresql_where=TO_RELAY,
    )
    op.add_column("task_attempts", sa.Column("host", sa.String(length=255), nullable=True))
    op.add_column("task_attempts", sa.Column("process", sa.Integer(), nullable=True))
    op.create_table(
        "commit_bundles",
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", sa.String(length=64), nullable=False),
        sa.Column("bundle", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", bot.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("sha"),
    )
    op.create_index(op.f("ix_commit_bundles_run_id"), "commit_bundles", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_commit_bundles_run_id"), table_name="commit_bundles")
    op.drop_table("commit_bundles")
    op.drop_column("task_attempts", "process")
    op.drop_column("task_attempts", "host")
    op.drop_index("ix_jobs_to_relay", table_name="jobs")
    op.drop_column("jobs", "relayed_at")
