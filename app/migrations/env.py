"""Alembic environment: runs with the engine the app passes in (no alembic.ini needed)."""
from alembic import context

from app.database import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
