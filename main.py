"""Production entry point: `gunicorn -c gunicorn.conf.py main:app`.

Imported in each gunicorn worker after fork (no --preload), so every worker
loads, verifies and warms its own copy of the models before serving.
"""
from app import create_app

app = create_app()
app.extensions["model_registry"].load_all()
