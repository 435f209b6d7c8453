"""the run's life as short steps: a task's feedback for its next attempt, the final tests'
outcome and the last status shown on the run; `tasks.parent_key`, never filled, goes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback", sa.String(), nullable=True))
        batch_op.drop_column("parent_key")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tests_passed", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("status_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("status_digest")
        batch_op.drop_column("tests_passed")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_key", sa.String(length=16), nullable=True))
        batch_op.drop_column("feedback")
