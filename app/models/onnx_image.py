"""Image classifiers exported to ONNX, run with ONNX Runtime (no TensorFlow in the server)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from app.models.base import Model

ONNX_FILE = "model.onnx"


class OnnxImageModel(Model):
    """An ONNX graph taking (N, H, W, 3) float32 in [0, 1] and returning class probabilities."""

    def _load(self) -> None:
        """Open the ONNX Runtime session with the configured thread counts."""
        options = ort.SessionOptions()
        # One intra-op thread per worker by default: gunicorn already runs one
        # worker per core, and more threads only contend (see benchmarks/).
        options.intra_op_num_threads = int(self.options.get("onnx_threads", 1))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self.manifest.directory / ONNX_FILE
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @property
    def input_size(self) -> int:
        """Side of the square input image, in pixels."""
        return int(self.manifest.data["preprocessing"]["input_size"])

    def warm_up(self) -> None:
        """One forward pass on a blank image."""
        self.predict([np.zeros((self.input_size, self.input_size, 3), dtype=np.float32)])

    def predict(self, batch: list[np.ndarray]) -> list[dict]:
        """Label and per-label probabilities for each preprocessed image."""
        probabilities = self.predict_array(np.stack(batch))
        return [
            {
                "label": self.labels[int(np.argmax(row))],
                "probabilities": {label: float(p) for label, p in zip(self.labels, row)},
            }
            for row in probabilities
        ]

    def predict_array(self, images: np.ndarray) -> np.ndarray:
        """Raw (N, classes) probabilities for an (N, H, W, 3) float32 array."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
