"""The prediction log without its index on input digests: every logged answer paid for keeping it, and
only the review-feedback join of a monitoring report read it (it now finds a version's rows by the model's
index, within the log's row limit).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    """Drop ix_predictions_digest."""
    op.drop_index("ix_predictions_digest", "predictions")


def downgrade():
    """Create it again."""
    op.create_index("ix_predictions_digest", "predictions", ["model", "input_digest"])
