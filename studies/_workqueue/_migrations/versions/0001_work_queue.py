"""The work queue as bilevel-optuna 0.1 made it with ``create_all``: tasks and workers.

Revision ID: 0001_work_queue
Revises:
Create Date: 2026-12-06

A database made before the schema was versioned has exactly these tables and no row in
``bilevel_alembic_version``; it is recognised by its tables and stamped with this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_work_queue"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bilevel_tasks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("run", sa.String(512), nullable=False),
        sa.Column("task_key", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("priority", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("heartbeat", sa.Double, nullable=True),
        sa.Column("outer_trial", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_bilevel_tasks_run", "bilevel_tasks", ["run"])
    op.create_table(
        "bilevel_workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("run", sa.String(512), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("heartbeat", sa.Double, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("task_key", sa.String(1024), nullable=True),
        sa.Column("n_done", sa.Integer, nullable=False),
    )
    op.create_index("ix_bilevel_workers_run", "bilevel_workers", ["run"])


def downgrade() -> None:
    op.drop_index("ix_bilevel_workers_run", table_name="bilevel_workers")
    op.drop_table("bilevel_workers")
    op.drop_index("ix_bilevel_tasks_run", table_name="bilevel_tasks")
    op.drop_table("bilevel_tasks")
