"""Production entry point: `gunicorn -c gunicorn.conf.py main:app`.

Imported in each gunicorn worker after fork (no --preload), so every worker
loads, verifies and warms its own copy of the models before serving.
"""
import gc
import io
import logging

from app import create_app
from app.models.registry import StoreWatcher
from app.models.shared import release_free_heap

app = create_app()
if "worker_token_file" in app.extensions:
    logging.getLogger("app.auth").info("worker endpoints need the token in %s (or set MODELSERVE_WORKER_TOKEN)",
                                       app.extensions["worker_token_file"])
registry = app.extensions["model_registry"]
registry.load_all()
if app.settings.model_poll_seconds:
    # Follow the store's new versions, promotions, rollbacks, unloads and reload requests in this worker,
    # loading what changed beside what serves (app/models/registry.py): no request waits for a load.
    app.extensions["model_store_watcher"] = StoreWatcher(registry, app.settings.model_poll_seconds).start()
release_free_heap()
# Everything built so far (the app, the models, the libraries) lives as long as the worker:
# move it out of the collector's reach, so that full collections during requests stay short.
gc.freeze()


def handle(request):
    """Google Cloud Functions entry point (functions-framework): the same Flask app serves the request."""
    body = request.get_data()  # the framework may have read the stream already; hand the app a fresh one
    environ = {**request.environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    with app.request_context(environ):
        return app.full_dispatch_request()
