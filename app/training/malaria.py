"""The malaria cell CNN: images, networks, training and ONNX export (TensorFlow/Keras; imported only here).

Cross-validation by patient and the served model's training are in malaria_cv.py:
``flask train malaria-fold``, ``flask train malaria-cv-report``, ``flask train malaria --variant``.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.preprocessing.image import prepare_image

log = logging.getLogger(__name__)

MODEL_NAME = "malaria_cell"
LABELS = ["Parasitized", "Uninfected"]
ONNX_FILE = "model.onnx"
LIBRARIES = ["tensorflow-cpu", "keras", "onnx", "onnxruntime", "numpy", "pillow"]


def _load_one(args: tuple[str, int]) -> np.ndarray:
    """Read and preprocess one file (worker process)."""
    path, size = args
    return prepare_image(Path(path).read_bytes(), size)


def load_images(malaria_dir: Path, rows: list[dict], size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images (N, size, size, 3) and labels (0 = Parasitized, 1 = Uninfected)."""
    jobs = [(str(Path(malaria_dir) / r["path"]), size) for r in rows]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        images = list(tqdm(pool.map(_load_one, jobs, chunksize=64), total=len(jobs), desc=desc, unit="img"))
    labels = np.array([LABELS.index(r["label"]) for r in rows], dtype=np.int64)
    return np.stack(images), labels


def foreground_standardize(x):
    """Standardise each image's colours over its cell pixels, ignoring the black padding.

    Stain and lighting differ from slide to slide (so from patient to patient);
    removing each cell's own colour mean and spread makes the network look at
    relative structure (dark parasite dots) instead.
    """
    from keras import ops

    mask = ops.cast(ops.max(x, axis=-1, keepdims=True) > 0.04, x.dtype)
    count = ops.sum(mask, axis=(1, 2), keepdims=True) + 1.0
    mean = ops.sum(x * mask, axis=(1, 2), keepdims=True) / count
    variance = ops.sum(ops.square(x - mean) * mask, axis=(1, 2), keepdims=True) / count
    return (x - mean) / ops.sqrt(variance + 1e-3) * mask


def build_model(size: int, standardize: bool = True, architecture: str = "vgg", width: float = 1.0):
    """The cell classifier: per-cell colour standardisation, then one of two small networks.

    "vgg": a strided stem, three conv3x3 pairs with max-pooling, global average pooling
    (about 133 M multiply-adds at 112x112, 43 M at 64x64; the tutorial model costs 3.26 G).
    "inverted": MobileNetV2-style inverted-residual blocks (expand 1x1, depthwise 3x3, project 1x1).
    """
    import keras
    from keras import layers

    def channels(n):
        return max(8, int(round(n * width / 8)) * 8)

    def conv_bn(x, filters, stride=1, kernel=3):
        x = layers.Conv2D(channels(filters), kernel, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    def inverted(x, filters, stride=1, expand=4):
        shortcut, inside = x, x.shape[-1]
        x = conv_bn(x, inside * expand / width, kernel=1)
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.BatchNormalization()(layers.Conv2D(channels(filters), 1, use_bias=False)(x))
        return layers.Add()([shortcut, x]) if stride == 1 and inside == x.shape[-1] else x

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Lambda(foreground_standardize, name="foreground_standardize")(inputs) if standardize else inputs
    if architecture == "vgg":
        x = conv_bn(x, 32, stride=2)
        x = conv_bn(x, 32)
        x = layers.MaxPooling2D()(x)
        x = conv_bn(x, 64)
        x = conv_bn(x, 64)
        x = layers.MaxPooling2D()(x)
        x = conv_bn(x, 128)
        x = conv_bn(x, 128)
        x = layers.MaxPooling2D()(x)
        x = conv_bn(x, 256)
    elif architecture == "inverted":
        x = conv_bn(x, 32, stride=2)
        for filters, stride, repeats in ((24, 2, 2), (48, 2, 3), (96, 2, 3), (160, 1, 2)):
            for i in range(repeats):
                x = inverted(x, filters, stride if i == 0 else 1)
        x = conv_bn(x, 384, kernel=1)
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=MODEL_NAME)


def count_macs(model) -> int:
    """Multiply-adds of one forward pass (convolutions and dense layers)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c_out = layer.output.shape
            total += h * w * layer.kernel_size[0] * layer.kernel_size[1] * c_out
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w = layer.kernel_size
            c_in = layer.input.shape[-1]
            total += h * w * k_h * k_w * c_in * c_out // layer.groups
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def augment(image, stain: bool = True):
    """Cell crops have no orientation; stains vary in colour and brightness from slide to slide."""
    import tensorflow as tf

    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_flip_up_down(image)
    image = tf.image.rot90(image, tf.random.uniform([], 0, 4, dtype=tf.int32))
    if stain:
        image = tf.image.random_brightness(image, 0.1)
        image = tf.image.random_contrast(image, 0.8, 1.2)
        image = tf.image.random_saturation(image, 0.7, 1.3)
        image = tf.image.random_hue(image, 0.05)
    return tf.clip_by_value(image, 0.0, 1.0)


def train_keras_model(x_train, y_train, x_val, y_val, seed: int, epochs: int, batch_size: int = 64, recipe=None):
    """Fit with AdamW and cosine decay.

    Images may be float32 in [0, 1] or uint8. With validation data the weights of the best
    validation epoch are kept; without (cross-validation folds), those of the last epoch.
    ``recipe`` (a malaria_cv.Variant) sets the network, label smoothing, augmentation and
    learning rate; without it, the v1 recipe.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    architecture, width, smoothing, stain, peak = (
        (recipe.architecture, recipe.width, recipe.label_smoothing, recipe.stain_augmentation, recipe.learning_rate)
        if recipe else ("vgg", 1.0, 0.0, True, 2e-3))
    batch_size = recipe.batch_size if recipe else batch_size

    def prepare(image, label):
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]; float32 unchanged
        return augment(image, stain), tf.one_hot(label, len(LABELS))

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
             .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
             .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    model = build_model(x_train.shape[1], architecture=architecture, width=width)
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, alpha=0.01, warmup_target=peak,
                                                       warmup_steps=steps // 20)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing), metrics=["accuracy"])
    if x_val is None:
        history = model.fit(train, epochs=epochs, verbose=2)
        return model, history.history
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_val))
           .map(lambda image, label: (tf.image.convert_image_dtype(image, tf.float32), tf.one_hot(label, len(LABELS))))
           .batch(256))
    best = keras.callbacks.ModelCheckpoint("/tmp/malaria_best.weights.h5", monitor="val_accuracy",
                                           save_best_only=True, save_weights_only=True)
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=[best], verbose=2)
    model.load_weights("/tmp/malaria_best.weights.h5")
    return model, history.history


def onnx_probabilities(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    """Run the exported model with ONNX Runtime, in batches."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 256]})[0] for i in range(0, len(images), 256)])


def export_onnx(model, path: Path, images: np.ndarray, keras_probs: np.ndarray | None = None,
                tolerance: float = 5e-3) -> tuple[np.ndarray, float]:
    """Export with Keras 3's ONNX exporter and check ONNX Runtime agrees with Keras on ``images``.

    Agreement means every predicted label is the same and no probability differs
    by more than ``tolerance``: the two runtimes sum in different orders, and the
    per-cell colour standardisation amplifies float32 rounding on a few cells
    (measured: median difference 2e-6, 99th percentile 8e-4).
    """
    if keras_probs is None:
        keras_probs = model.predict(images, batch_size=256, verbose=0)
    model.export(str(path), format="onnx", verbose=False)
    onnx_probs = onnx_probabilities(path, images)
    differences = np.abs(onnx_probs - keras_probs)
    max_diff = float(differences.max())
    same_labels = bool((onnx_probs.argmax(axis=1) == keras_probs.argmax(axis=1)).all())
    print(f"ONNX vs Keras on {len(images)} images: max abs difference {max_diff:.2e} "
          f"(median {float(np.median(differences)):.1e}); same labels: {same_labels}")
    if max_diff > tolerance or not same_labels:
        raise RuntimeError(f"ONNX export disagrees with Keras (max abs diff {max_diff}, same labels {same_labels})")
    return onnx_probs, max_diff
