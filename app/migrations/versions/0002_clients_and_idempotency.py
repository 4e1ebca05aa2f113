"""Job clients (the API key or address that made a job) and idempotency keys for jobs and feedback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    """Add the owner and idempotency columns with their unique indexes."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(100), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.create_index("ux_jobs_idempotency_key", ["idempotency_key"], unique=True)
    with op.batch_alter_table("review_feedback") as batch:
        batch.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(100), nullable=True))
        batch.create_index("ux_feedback_content_hash", ["content_hash"], unique=True)
        batch.create_index("ux_feedback_idempotency_key", ["idempotency_key"], unique=True)


def downgrade():
    """Drop them again."""
    with op.batch_alter_table("review_feedback") as batch:
        batch.drop_index("ux_feedback_idempotency_key")
        batch.drop_index("ux_feedback_content_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("content_hash")
        batch.drop_column("client")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ux_jobs_idempotency_key")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("client")
