"""LitServe with the same two endpoints: `python -m benchmarks.peers.litserve_app` (PORT, BENCH_PROCESSES).

Set up the way LitServe's documentation shows: one LitAPI per model, each on its
own path, `workers_per_device` inference processes per API fed by LitServe's own
API server processes, and LitServe's own batching (LITSERVE_MAX_BATCH requests
collected for at most LITSERVE_BATCH_TIMEOUT seconds; 1 turns it off).
"""
from __future__ import annotations

import os

import litserve as ls

from benchmarks.peers.common import Models

MAX_BATCH = int(os.environ.get("LITSERVE_MAX_BATCH", "16"))
BATCH_TIMEOUT = float(os.environ.get("LITSERVE_BATCH_TIMEOUT", "0.002"))


class BatchedAPI(ls.LitAPI):
    """Requests come as lists when LitServe batches them; our model classes take lists anyway."""

    which = ""

    def setup(self, device):
        """Load only this API's model in each of its inference processes."""
        self.models = Models(only=(self.which,))
        self.model = getattr(self.models, self.which)

    def batch(self, inputs):
        """LitServe's collected requests, as the list of items our model takes."""
        return list(inputs)

    def unbatch(self, output):
        """One prediction per request."""
        return output

    def predict(self, items):
        """Decode, preprocess and predict a list of items (a list of one without batching)."""
        many = isinstance(items, list)
        rows = Models.predict(self.model, items if many else [items])
        return rows if many else rows[0]

    def encode_response(self, output):
        """The prediction as JSON."""
        return output


class CellAPI(BatchedAPI):
    """Multipart field `image` -> label and probabilities."""

    which = "cell"

    def decode_request(self, request):
        """LitServe hands multipart forms over parsed; read the upload's bytes."""
        return request["image"].file.read()


class ReviewAPI(BatchedAPI):
    """Form field `review` -> sentiment."""

    which = "review"

    def decode_request(self, request):
        """The form's review text."""
        return request["review"]


def main() -> None:
    """Both APIs in one server, `BENCH_PROCESSES` inference processes each on the CPU."""
    batching = {"max_batch_size": MAX_BATCH, "batch_timeout": BATCH_TIMEOUT} if MAX_BATCH > 1 else {}
    server = ls.LitServer([CellAPI(api_path="/classify", **batching), ReviewAPI(api_path="/review", **batching)],
                          accelerator="cpu", workers_per_device=int(os.environ.get("BENCH_PROCESSES", "2")))
    server.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ["PORT"]), generate_client_file=False)


if __name__ == "__main__":
    main()
