"""run mode: orchestrated or one agent (the single-agent baseline), and why it was chosen

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(24), nullable=False, server_default="orchestrated")
        )
        batch_op.add_column(
            sa.Column("mode_reason", sa.String(16), nullable=False, server_default="default")
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("mode_reason")
        batch_op.drop_column("mode")
