"""Running one job's payload through a registered model (used by the built-in worker)."""
from __future__ import annotations

import base64
import io

import numpy as np

from app.models.base import Model
from app.preprocessing.image import ImageError, prepare_image


class JobInputError(ValueError):
    """The payload cannot be used by the model; retrying will not help."""


def occlusion_heatmap(model, image: np.ndarray, patch: int = 16, stride: int = 8) -> np.ndarray:
    """How much the Parasitized probability drops when each region is blacked out (0..1 map)."""
    size = image.shape[0]
    base = float(model.predict_array(image[None])[0, 0])
    positions = [(y, x) for y in range(0, size - patch + 1, stride) for x in range(0, size - patch + 1, stride)]
    batch = np.repeat(image[None], len(positions), axis=0)
    for i, (y, x) in enumerate(positions):
        batch[i, y:y + patch, x:x + patch] = 0.0
    drops = np.concatenate([base - model.predict_array(batch[i:i + 64])[:, 0] for i in range(0, len(batch), 64)])
    heat, counts = np.zeros((size, size)), np.zeros((size, size))
    for drop, (y, x) in zip(drops, positions):
        heat[y:y + patch, x:x + patch] += max(drop, 0.0)
        counts[y:y + patch, x:x + patch] += 1
    heat /= np.maximum(counts, 1)
    return heat / heat.max() if heat.max() > 0 else heat


def heatmap_png(image: np.ndarray, heat: np.ndarray) -> bytes:
    """The cell with the heat map blended in red, as PNG bytes."""
    from PIL import Image

    rgb = (image * 255).astype(np.float32)
    red = np.zeros_like(rgb)
    red[..., 0] = 255
    alpha = (heat * 0.6)[..., None]
    blended = (rgb * (1 - alpha) + red * alpha).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blended).resize((image.shape[1] * 2, image.shape[0] * 2), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def execute(model: Model, payload: bytes, content_type: str, heatmap: bool = True) -> dict:
    """The JSON result of one job: the prediction, the model, and for images a heat map PNG (base64)."""
    result: dict
    if model.manifest.runtime == "onnx-image":
        try:
            image = prepare_image(payload, model.input_size)
        except ImageError as exc:
            raise JobInputError(exc.reason) from exc
        result = dict(model.run([image])[0])
        if heatmap:
            result["heatmap_png_base64"] = base64.b64encode(heatmap_png(image, occlusion_heatmap(model, image))).decode()
            result["heatmap_method"] = "occlusion (16x16 black patch, stride 8): drop in P(Parasitized)"
    else:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobInputError("text payload is not valid UTF-8") from exc
        if not text.strip():
            raise JobInputError("text payload is empty")
        result = dict(model.run([text])[0])
    result["model"] = {"name": model.name, "version": model.version}
    return result
