"""Feedback by request id: the item of each logged answer, request ids as long as the server accepts
(128 characters), and the true labels sent for answers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    """Add predictions.item and its request index; create prediction_feedback."""
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("item", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("request_id", type_=sa.String(128), existing_type=sa.String(64), existing_nullable=True)
    op.create_index("ix_predictions_request", "predictions", ["model", "request_id"])
    op.create_table(
        "prediction_feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("item", sa.Integer, nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ux_prediction_feedback_answer", "prediction_feedback", ["model", "request_id", "item"],
                    unique=True)


def downgrade():
    """Drop them."""
    op.drop_index("ux_prediction_feedback_answer", "prediction_feedback")
    op.drop_table("prediction_feedback")
    op.drop_index("ix_predictions_request", "predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("request_id", type_=sa.String(64), existing_type=sa.String(128), existing_nullable=True)
        batch.drop_column("item")
