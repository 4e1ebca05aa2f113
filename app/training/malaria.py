"""Training and ONNX export of the malaria cell CNN (TensorFlow/Keras; imported only here).

Run through the CLI: ``flask train malaria --data ../shared/data``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.preprocessing.image import prepare_image
from app.training.artifacts import next_version, publish_version, staging_dir

log = logging.getLogger(__name__)

MODEL_NAME = "malaria_cell"
LABELS = ["Parasitized", "Uninfected"]
INPUT_SIZE = 112
ONNX_FILE = "model.onnx"
SPLIT_FILE = "split.json"
LIBRARIES = ["tensorflow-cpu", "keras", "onnx", "onnxruntime", "numpy", "pillow"]


def read_manifest(malaria_dir: Path) -> list[dict]:
    """Rows of MANIFEST.csv: path, label, patient, ..."""
    with open(Path(malaria_dir) / "MANIFEST.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def split_patients(rows: list[dict], seed: int, fractions=(0.70, 0.15, 0.15)) -> dict[str, list[str]]:
    """Assign whole patients to train/validation/test, never splitting a patient.

    Infected patients (any Parasitized cell) and healthy patients are split
    separately so every part holds both kinds.
    """
    infected = sorted({r["patient"] for r in rows if r["label"] == "Parasitized"})
    healthy = sorted({r["patient"] for r in rows} - set(infected))
    rng = random.Random(seed)
    parts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for group in (infected, healthy):
        group = group[:]
        rng.shuffle(group)
        n_val = round(len(group) * fractions[1])
        n_test = round(len(group) * fractions[2])
        parts["test"] += group[:n_test]
        parts["validation"] += group[n_test:n_test + n_val]
        parts["train"] += group[n_test + n_val:]
    return {k: sorted(v) for k, v in parts.items()}


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


def build_model(size: int = INPUT_SIZE, standardize: bool = True, architecture: str = "vgg", width: float = 1.0):
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


def measure(probabilities: np.ndarray, y_true: np.ndarray, patients: int) -> tuple[dict, dict]:
    """Accuracy, ROC AUC (Parasitized as the positive class) and confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

    predicted = probabilities.argmax(axis=1)
    parasitized = (y_true == 0).astype(int)
    matrix = confusion_matrix(y_true, predicted, labels=[0, 1])
    fpr, tpr, _ = roc_curve(parasitized, probabilities[:, 0])
    metrics = {
        "dataset": f"NIH malaria cells of {patients} held-out patients (no cell of theirs used for training or model selection)",
        "examples": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, predicted)), 5),
        "roc_auc": round(float(roc_auc_score(parasitized, probabilities[:, 0])), 5),
        "confusion_matrix": {"labels": LABELS, "rows_true_columns_predicted": matrix.tolist()},
    }
    return metrics, {"fpr": fpr, "tpr": tpr, "matrix": matrix}


def train_malaria_model(data_dir: Path, model_dir: Path, seed: int = 0, epochs: int = 40,
                        size: int = INPUT_SIZE) -> Path:
    """Split by patient, train, export to ONNX, check parity, measure on held-out patients."""
    import tensorflow as tf

    from app.training.plots import save_evaluation_plots, save_training_curves

    tf.config.experimental.enable_op_determinism()
    malaria_dir = Path(data_dir) / "malaria"
    rows = read_manifest(malaria_dir)
    split = split_patients(rows, seed)
    part_rows = {name: [r for r in rows if r["patient"] in set(patients)] for name, patients in split.items()}
    arrays = {name: load_images(malaria_dir, part, size, f"loading {name}") for name, part in part_rows.items()}

    model, history = train_keras_model(*arrays["train"], *arrays["validation"], seed=seed, epochs=epochs)
    x_test, y_test = arrays["test"]
    keras_probs = model.predict(x_test, batch_size=256, verbose=0)

    root = Path(model_dir) / MODEL_NAME
    version = next_version(root)
    staging = staging_dir(root, version)
    onnx_probs, max_diff = export_onnx(model, staging / ONNX_FILE, x_test, keras_probs)

    metrics, curves = measure(onnx_probs, y_test, len(split["test"]))
    val_metrics, _ = measure(model.predict(arrays["validation"][0], batch_size=256, verbose=0),
                             arrays["validation"][1], len(split["validation"]))
    (staging / SPLIT_FILE).write_text(json.dumps({"seed": seed, **split}, indent=1) + "\n")
    save_training_curves(staging, history, f"{MODEL_NAME} v{version}")
    save_evaluation_plots(staging, f"{MODEL_NAME} v{version}: held-out patients, accuracy {metrics['accuracy']:.2%}",
                          LABELS, curves["matrix"], curves["fpr"], curves["tpr"], metrics["roc_auc"])
    macs = count_macs(model)
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "task": "image-classification",
        "runtime": "onnx-image",
        "description": "Thin blood smear cell crops: Parasitized vs Uninfected. Small VGG-style CNN, ONNX.",
        "labels": LABELS,
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "image",
                    "description": f"an encoded PNG or JPEG file per item; also accepted: a UINT8 (0..255) or "
                                   f"FP32 (0..1) tensor [N, {size}, {size}, 3] already padded to square with "
                                   f"black and resized (bilinear)"}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]}],
        # The onnx-image runtime's settings; the same steps as app.preprocessing.image.prepare_image.
        "preprocessing": {"input_size": size, "resize": "pad", "filter": "bilinear", "scale": 1 / 255,
                          "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "layout": "NHWC",
                          "output_kind": "probabilities"},
        "multiply_adds_per_image": macs,
        "parameters": int(model.count_params()),
        "metrics": {**metrics, "onnx_vs_keras_max_abs_diff": max_diff},
        "validation_metrics": val_metrics,
        "training": {
            "data": f"NIH malaria cells: {len(arrays['train'][1])} train cells of {len(split['train'])} patients, "
                    f"{len(arrays['validation'][1])} validation cells of {len(split['validation'])} patients "
                    f"(best epoch chosen on validation accuracy)",
            "split": "by patient (MANIFEST.csv 'patient'); see split.json",
            "seed": seed,
            "epochs": epochs,
            "augmentation": "flips, 90-degree rotations, brightness/contrast/saturation/hue jitter (stain variation)",
            "architecture": "per-cell colour standardisation over foreground pixels, then 7 conv3x3+BN+ReLU layers (32-32-64-64-128-128-256, strided stem, 3 max-pools), global average pooling, dropout 0.3, softmax",
            "optimizer": "AdamW, cosine decay with warm-up to 2e-3, weight decay 1e-4, batch 64",
            "best_validation_accuracy": round(float(max(history["val_accuracy"])), 5),
        },
    }
    return publish_version(staging, manifest, LIBRARIES)
