"""The prediction log: a row per inference (app/monitoring/log.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    """Create predictions and its indexes."""
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("input_digest", sa.String(64), nullable=True),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_predictions_model_created", "predictions", ["model", "created_at"])
    op.create_index("ix_predictions_digest", "predictions", ["model", "input_digest"])


def downgrade():
    """Drop it."""
    op.drop_index("ix_predictions_digest", "predictions")
    op.drop_index("ix_predictions_model_created", "predictions")
    op.drop_table("predictions")
