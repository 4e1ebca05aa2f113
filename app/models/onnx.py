"""ONNX models run with ONNX Runtime: any graph (tensors by its own names), or an image classifier
whose preprocessing the manifest configures."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.errors import BadRequest, PayloadTooLarge, Unprocessable
from app.models.base import INPUT_ERRORS, Model, TensorSpec, decode_array, decode_bytes, softmax
from app.preprocessing.cell_check import CellCheck
from app.preprocessing.image import ImageError, ImagePreprocessing, decode_image

ONNX_FILE = "model.onnx"
OCCLUSION_PATCH, OCCLUSION_STRIDE = 16, 8


def onnx_file(manifest) -> Path:
    """The graph a manifest serves: its config's ``file`` (an int8 network, say), else model.onnx."""
    return manifest.artifact_path(manifest.config.get("file", ONNX_FILE))


def make_session(path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU with an explicit thread count."""
    options = ort.SessionOptions()
    # One intra-op thread per worker by default: gunicorn already runs one
    # worker per core, and more threads only contend (see benchmarks/).
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # An int8 network gives the same answers on every x86-64 CPU: without VNNI instructions (AVX2
    # only, e.g. older AMD EPYC), ONNX Runtime's u8s8 kernels add products in 16 bits that saturate,
    # and the shipped cell network's probabilities moved (tests/test_malaria_int8.py checks them).
    # This makes them widen the 8-bit values to 16 bits before multiplying, which gives the VNNI
    # answers again, somewhat slower on such a CPU. Float networks do not use these kernels.
    options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ONNX Runtime's errors for a graph given values it cannot use (an index past a Gather's table, say).
ONNX_INPUT_ERRORS = INPUT_ERRORS + (ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                                    ort.capi.onnxruntime_pybind11_state.RuntimeException,
                                    ort.capi.onnxruntime_pybind11_state.Fail)


class OnnxModel(Model):
    """Any ONNX graph: tensors in and out by the graph's own input and output names."""

    platform = "onnxruntime_onnx"
    input_errors = ONNX_INPUT_ERRORS

    def _load(self) -> None:
        """Open the ONNX Runtime session with the configured thread count."""
        self.session = make_session(onnx_file(self.manifest), self.options.get("onnx_threads", 1))

    def run_graph(self, feeds: dict[str, np.ndarray], names: list[str] | None = None) -> dict:
        """Named graph outputs for named input arrays."""
        names = names or self.output_names
        return dict(zip(names, self.session.run(names, feeds)))

    def predict(self, batch: dict) -> dict:
        """The declared outputs, as the graph computes them; a classifier's integer labels named (see
        app/models/add.py, ``classifier_outputs``)."""
        graph_names = self.manifest.config.get("graph_outputs") or {}
        values = self.session.run([graph_names.get(n, n) for n in self.output_names],
                                  {name: np.ascontiguousarray(array) for name, array in batch.items()})
        outputs = dict(zip(self.output_names, values))
        if self.manifest.config.get("label_by_index") and self.labels:
            outputs["label"] = np.array([self.labels[int(i)] if 0 <= int(i) < len(self.labels) else str(int(i))
                                         for i in outputs["label"]], dtype=object)
        return outputs


UNLIKE = "unlike_training_images"
UNLIKE_WARNING = ("This image does not look like the thin-smear cell crops the model was trained on: the answer "
                  "is not reliable (cell-likeness check; see the model's metrics.cell_check)")


class OnnxImageModel(OnnxModel):
    """An ONNX image classifier with configured preprocessing.

    Manifest ``preprocessing``: ``input_size`` (side or [height, width]), ``resize``
    (pad | crop | stretch), ``filter``, ``scale`` (applied to 0..255 pixels), ``mean``
    and ``std`` (per channel, after scaling), ``layout`` (NHWC or NCHW), ``graph_input``,
    and ``graph_output`` holding ``probabilities`` or ``logits``. The image input takes
    encoded PNG/JPEG files, or a UINT8 (0..255) / FP32 (0..1) tensor [N, H, W, 3] already
    resized.
    """

    def _load(self) -> None:
        """Open the session and read the preprocessing settings."""
        super()._load()
        config = self.manifest.config
        self.preprocessing = ImagePreprocessing.from_config(config)
        self.graph_input = config.get("graph_input") or self.session.get_inputs()[0].name
        self.graph_output = config.get("graph_output") or self.session.get_outputs()[0].name
        self.scale = float(config.get("scale", 1 / 255))
        self.mean = np.asarray(config.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
        self.std = np.asarray(config.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
        self.layout = config.get("layout", "NHWC")
        self.logits = config.get("output_kind", "probabilities") == "logits"
        self.cell_check = CellCheck.read(self.manifest.artifact_path(config["cell_check"])) \
            if config.get("cell_check") else None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.preprocessing.height, self.preprocessing.width

    def decode_input(self, spec: TensorSpec, column) -> np.ndarray:
        """(N, H, W, 3) float32 in [0, 1] from encoded files or an image tensor."""
        if isinstance(column, np.ndarray) and column.dtype != object:
            return self._tensor_images(spec, column)
        images, budget = [], self.limits.max_batch_image_pixels  # decoded pixels the whole request may use
        for data in decode_bytes(spec, column):
            limit = min(self.limits.max_image_pixels, budget)
            try:
                image = decode_image(data, limit)
            except ImageError as exc:
                if exc.too_large and limit < self.limits.max_image_pixels:
                    raise PayloadTooLarge(f"input {spec.name!r}: the images of one request may have "
                                          f"{self.limits.max_batch_image_pixels:,} pixels in all; send fewer "
                                          "or smaller images per request") from exc
                raise (PayloadTooLarge if exc.too_large else Unprocessable)(f"input {spec.name!r}: {exc.reason}") from exc
            budget -= image.width * image.height
            images.append(self.preprocessing.apply(image))
        return np.stack(images)

    def _tensor_images(self, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
        """A UINT8 (0..255) or float (0..1) image tensor of the model's size."""
        height, width = self.input_size
        if array.ndim != 4 or tuple(array.shape[1:]) != (height, width, 3):
            raise BadRequest(f"input {spec.name!r}: an image tensor must have shape [N, {height}, {width}, 3], "
                             f"got {list(array.shape)}")
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        if array.dtype.kind != "f":
            raise BadRequest(f"input {spec.name!r}: an image tensor must be UINT8 or FP32")
        return decode_array(TensorSpec(spec.name, "FP32", (-1, height, width, 3)), array)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities for (N, H, W, 3) images in [0, 1]."""
        feed = (images * (255.0 * self.scale) - self.mean) / self.std if self._normalizes else images
        if self.layout == "NCHW":
            feed = feed.transpose(0, 3, 1, 2)
        out = self.run_graph({self.graph_input: np.ascontiguousarray(feed, dtype=np.float32)}, [self.graph_output])
        scores = np.asarray(out[self.graph_output], dtype=np.float32)
        return softmax(scores) if self.logits else scores

    @property
    def _normalizes(self) -> bool:
        """Whether scale/mean/std change anything (the identity costs a copy per request)."""
        return not (abs(255.0 * self.scale - 1.0) < 1e-9 and not self.mean.any() and (self.std == 1).all())

    def predict(self, batch: dict) -> dict:
        """label and per-label probabilities for each image; with a cell check (``config.cell_check``), whether
        each image looks unlike what the model was trained on."""
        images = batch[self.inputs[0].name]
        probabilities = self.probabilities(images)
        outputs = {"label": self.labels_at(probabilities.argmax(axis=1)), "probabilities": probabilities}
        if self.cell_check is not None:
            outputs[UNLIKE] = self.cell_check.unlike(images)
        return outputs

    def postprocess(self, outputs) -> list[dict]:
        """The plain answers, with a ``warning`` on each image the cell check finds unlike the training data."""
        rows = super().postprocess(outputs)
        for row, unlike in zip(rows, outputs.get(UNLIKE, ())):
            if unlike:
                row["warning"] = UNLIKE_WARNING
        return rows

    @property
    def occlusion_geometry(self) -> tuple[int, int]:
        """(patch side, stride): 16 and 8 pixels, smaller for inputs under 64 pixels a side."""
        patch = max(1, min(OCCLUSION_PATCH, min(self.input_size) // 4))
        return patch, max(1, min(OCCLUSION_STRIDE, patch // 2))

    def explain(self, batch: dict, outputs: dict) -> list[dict]:
        """Occlusion heat map of each image: how much P(predicted label) drops where a patch is blacked out."""
        rows = []
        for image, probs in zip(batch[self.inputs[0].name], outputs["probabilities"]):
            column = int(np.argmax(probs))
            heat = self.occlusion_heatmap(image, column)
            rows.append({
                "heatmap_png_base64": base64.b64encode(heatmap_png(image, heat)).decode(),
                "heatmap_method": "occlusion ({0}x{0} black patch, stride {1}): drop in P({2})".format(
                    *self.occlusion_geometry, self.labels[column]),
            })
        return rows

    def occlusion_heatmap(self, image: np.ndarray, column: int) -> np.ndarray:
        """0..1 map of the drop in one class's probability when each region is blacked out."""
        height, width = image.shape[:2]
        patch, stride = self.occlusion_geometry
        base = float(self.probabilities(image[None])[0, column])
        positions = [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - patch + 1, stride)]
        occluded = np.repeat(image[None], len(positions), axis=0)
        for i, (y, x) in enumerate(positions):
            occluded[i, y:y + patch, x:x + patch] = 0.0
        drops = np.concatenate([base - self.probabilities(occluded[i:i + 64])[:, column]
                                for i in range(0, len(occluded), 64)])
        heat, counts = np.zeros((height, width)), np.zeros((height, width))
        for drop, (y, x) in zip(drops, positions):
            heat[y:y + patch, x:x + patch] += max(drop, 0.0)
            counts[y:y + patch, x:x + patch] += 1
        heat /= np.maximum(counts, 1)
        return heat / heat.max() if heat.max() > 0 else heat


def heatmap_png(image: np.ndarray, heat: np.ndarray, scale: int = 4) -> bytes:
    """The image, ``scale`` times its size, with the heat map over the cell only (not its black margin): from
    no colour (no effect) through yellow to red (the largest drop), as PNG bytes."""
    from PIL import Image

    from app.preprocessing.cell_check import DARK

    size = (image.shape[1] * scale, image.shape[0] * scale)
    rgb = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR),
                     dtype=np.float32)
    heat = np.asarray(Image.fromarray(heat.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0, 1) * (rgb.max(axis=2) > DARK * 255)
    colour = np.stack([np.full_like(heat, 255), 255 * (1 - heat), np.zeros_like(heat)], axis=2)  # yellow -> red
    alpha = (0.65 * heat)[..., None]
    buffer = io.BytesIO()
    Image.fromarray((rgb * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()