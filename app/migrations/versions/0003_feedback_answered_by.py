"""Feedback rows record the model version whose answer they correct.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    """Add review_feedback.answered_by_version."""
    with op.batch_alter_table("review_feedback") as batch:
        batch.add_column(sa.Column("answered_by_version", sa.String(16), nullable=True))


def downgrade():
    """Drop it."""
    with op.batch_alter_table("review_feedback") as batch:
        batch.drop_column("answered_by_version")
