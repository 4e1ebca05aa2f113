"""The reference: a bare Flask app doing the same decode + inference, nothing else.

No validation beyond what the code needs, no metrics, request ids, registry or
backpressure: what a hand-written tutorial endpoint does. Served by gunicorn
with the project's worker count and worker class.
"""
from flask import Flask, request

from benchmarks.peers.common import Models

app = Flask(__name__)
models = Models()


@app.post("/classify")
def classify():
    """Multipart field `image` -> label and probabilities."""
    return models.classify(request.files["image"].read())


@app.post("/review")
def review():
    """Form field `review` -> sentiment."""
    return models.sentiment(request.form["review"])


@app.get("/ready")
def ready():
    """Models load at import, so answering means ready."""
    return {"ready": True}
