"""Models this project never saw, added with `flask models add` and served through every protocol.

Each model is made inside the test (scikit-learn tabular and text pipelines saved with
skops, an ONNX export made with skl2onnx, a tiny ONNX image classifier, a Python class),
added with the CLI, then asked through /models/NAME/predict, V2 (tritonclient, JSON and
binary) and a job run by the built-in pull worker; every answer must equal the model
called in process.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import threading

import numpy as np
import onnxruntime as ort
import pytest
import skops.io as sio
import tritonclient.http as triton
from PIL import Image
from sklearn.datasets import load_wine
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from app import create_app
from app.jobs.pull import Server, run_worker
from app.models.registry import ModelRegistry
from tests.conftest import SAVED_MODELS, get_json, run_gunicorn

TOKEN = "byo-worker-token"
WINE_LABELS = ["barolo", "grignolino", "barbera"]
REVIEWS = ["a wonderful film, loved it", "dull and far too long", "great acting and a great story",
           "awful, boring, a waste of time", "loved every minute", "boring plot and bad acting"]
SHOUTY = '''
import numpy as np

from app.models.base import Model


class Shouty(Model):
    """Excited when a text has exclamation marks: P(excited) = min(1, count / 3)."""

    INPUTS = [{"name": "text", "datatype": "BYTES", "shape": [-1], "content": "text"}]
    OUTPUTS = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
               {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}]
    LABELS = ["calm", "excited"]

    def predict(self, batch):
        share = np.array([min(1.0, text.count("!") / 3) for text in batch["text"]])
        labels = np.array([self.labels[int(s > 0.5)] for s in share], dtype=object)
        return {"label": labels, "probabilities": np.stack([1 - share, share], axis=1)}
'''


def double(x):
    """A function skops does not trust by default (used to build an untrusted pipeline)."""
    return x * 2


def png(color: tuple[int, int, int], size=(20, 14)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_image_onnx(path) -> np.ndarray:
    """[N, 3, 8, 8] -> mean colour -> linear -> softmax; returns the weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[-4.0, 4.0], [-3.0, 3.0], [-2.0, 2.0]], dtype=np.float32)
    bias = np.array([4.5, -4.5], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixels"], ["mean"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits0"]),
         helper.make_node("Add", ["logits0", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["scores"], axis=1)],
        "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return weights, bias


class Models:
    """The user's models, their files, and how each answers when called in process."""

    def __init__(self, root):
        from skl2onnx import to_onnx

        X, y = load_wine(return_X_y=True)
        self.wine_rows = X[[0, 60, 140, 100, 10]]
        self.wine = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
        sio.dump(self.wine, root / "wine.skops")
        self.text = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(REVIEWS, [1, 0, 1, 0, 1, 0])
        sio.dump(self.text, root / "reviews.skops")
        (root / "wine.onnx").write_bytes(
            to_onnx(self.wine, X[:1].astype(np.float32), options={"zipmap": False}).SerializeToString())
        self.wine_session = ort.InferenceSession(str(root / "wine.onnx"), providers=["CPUExecutionProvider"])
        self.image_weights, self.image_bias = tiny_image_onnx(root / "tiny.onnx")
        (root / "shouty").mkdir()
        (root / "shouty" / "model.py").write_text(SHOUTY)
        self.root = root

    # name -> (file, extra CLI arguments)
    def sources(self) -> dict:
        return {
            "wine": (self.root / "wine.skops", ["--labels", ",".join(WINE_LABELS)]),
            "reviews": (self.root / "reviews.skops", ["--labels", "negative,positive"]),
            "wine_onnx": (self.root / "wine.onnx", []),
            "tiny_image": (self.root / "tiny.onnx", ["--image", "--labels", "dark,bright"]),
            "shouty": (self.root / "shouty", ["--class", "model:Shouty"]),
        }

    def image_probabilities(self, data: bytes) -> np.ndarray:
        """The tiny classifier by hand: pad to square, resize to 8x8 (bilinear), mean colour, linear, softmax."""
        from PIL import ImageOps

        image = ImageOps.pad(Image.open(io.BytesIO(data)).convert("RGB"), (8, 8),
                             method=Image.Resampling.BILINEAR, color=(0, 0, 0))
        mean = (np.asarray(image, dtype=np.float32) / 255.0).mean(axis=(0, 1))
        logits = mean @ self.image_weights + self.image_bias
        return np.exp(logits) / np.exp(logits).sum()


# What each model is asked, and what it must answer (computed in process).
def cases(models: Models) -> dict:
    images = [png((240, 240, 230)), png((20, 30, 25))]
    texts = ["what a wonderful story", "boring!!! awful!!"]
    wine_proba = models.wine.predict_proba(models.wine_rows)
    onnx_label, onnx_proba = models.wine_session.run(None, {"X": models.wine_rows.astype(np.float32)})
    image_proba = np.stack([models.image_probabilities(d) for d in images])
    shout = np.array([min(1.0, t.count("!") / 3) for t in texts])
    return {
        "wine": ([r.tolist() for r in models.wine_rows],
                 [{"label": WINE_LABELS[int(np.argmax(p))], "probabilities": dict(zip(WINE_LABELS, p))}
                  for p in wine_proba]),
        "reviews": (texts, [{"label": ["negative", "positive"][int(p[1] > 0.5)],
                             "probabilities": {"negative": p[0], "positive": p[1]}}
                            for p in models.text.predict_proba(texts)]),
        "wine_onnx": ([r.tolist() for r in models.wine_rows],
                      [{"label": int(label), "probabilities": list(p)} for label, p in zip(onnx_label, onnx_proba)]),
        "tiny_image": ([{"b64": base64.b64encode(d).decode()} for d in images],
                       [{"label": ["dark", "bright"][int(np.argmax(p))], "probabilities": {"dark": p[0], "bright": p[1]}}
                        for p in image_proba]),
        "shouty": (texts, [{"label": ["calm", "excited"][int(s > 0.5)], "probabilities": {"calm": 1 - s, "excited": s}}
                           for s in shout]),
    }


def assert_same(served: list[dict], expected: list[dict]) -> None:
    """Same labels; numbers equal to float32 precision."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        assert got["label"] == want["label"]
        if isinstance(want["probabilities"], dict):
            assert got["probabilities"].keys() == want["probabilities"].keys()
            assert np.allclose([got["probabilities"][k] for k in want["probabilities"]],
                               list(want["probabilities"].values()), atol=1e-6)
        else:
            assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-6)


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """A model folder holding the flagship review and cell models plus the five user models, added with the CLI."""
    root = tmp_path_factory.mktemp("byo")
    model_dir = root / "models"
    for name in ("review_sentiment", "malaria_cell"):
        shutil.copytree(SAVED_MODELS / name, model_dir / name)
    models = Models(root)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{root / 'cli.db'}", "MODEL_DIR": str(model_dir)})
    runner = app.test_cli_runner()
    for name, (source, extra) in models.sources().items():
        result = runner.invoke(args=["models", "add", name, str(source), *extra])
        assert result.exit_code == 0, result.output
        assert f"added {name} version 1" in result.output and "smoke prediction" in result.output
    app.extensions["db_engine"].dispose()
    return models, model_dir, cases(models)


@pytest.fixture
def byo_client(byo, tmp_path):
    """A test client of an app serving the byo model folder."""
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}", "MODEL_DIR": str(byo[1])})
    yield app.test_client()
    app.extensions["db_engine"].dispose()


@pytest.fixture(scope="module")
def byo_server(byo, tmp_path_factory):
    """gunicorn serving the byo model folder, with a worker token."""
    env = {"MODELSERVE_MODEL_DIR": str(byo[1]), "MODELSERVE_WORKER_TOKEN": TOKEN}
    with run_gunicorn(tmp_path_factory.mktemp("byo-server"), env) as (base, _):
        yield base


NAMES = ["wine", "reviews", "wine_onnx", "tiny_image", "shouty"]


@pytest.mark.parametrize("name", NAMES)
def test_rest_predict_matches_the_model_in_process(byo, byo_client, name):
    instances, expected = byo[2][name]
    response = byo_client.post(f"/models/{name}/predict", json={"instances": instances})
    assert response.status_code == 200, response.json
    assert response.json["model"] == {"name": name, "version": "1"}
    assert_same(response.json["predictions"], expected)
    versioned = byo_client.post(f"/models/{name}/versions/1/predict", json={"instances": instances[:1]})
    assert_same(versioned.json["predictions"], expected[:1])


def test_models_are_listed_and_described(byo_client):
    listed = {m["name"]: m for m in byo_client.get("/models").json["models"]}
    assert set(NAMES) <= set(listed)
    assert listed["wine"]["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 13],
                                         "description": "feature vector"}]
    assert [o["name"] for o in listed["reviews"]["outputs"]] == ["label", "probabilities"]
    assert byo_client.get("/models/tiny_image").json["labels"] == ["dark", "bright"]
    assert byo_client.get("/models/nope").status_code == 404
    page = byo_client.get("/ui/models").get_data(as_text=True)  # the web UI's models page shows them too
    assert all(f"<h2>{name} " in page for name in NAMES) and "input FP64 [-1, 13]" in page


def v2_inputs(name: str, instances: list, binary: bool) -> list:
    """tritonclient inputs for a model's instances."""
    if name in ("wine", "wine_onnx"):
        dtype, datatype = (np.float64, "FP64") if name == "wine" else (np.float32, "FP32")
        array = np.array(instances, dtype=dtype)
        tensor = triton.InferInput("input" if name == "wine" else "X", list(array.shape), datatype)
    elif name == "tiny_image":
        array = np.array([base64.b64decode(i["b64"]) for i in instances], dtype=object)
        tensor = triton.InferInput("image", [len(array)], "BYTES")
    else:
        array = np.array([t.encode() for t in instances], dtype=object)
        tensor = triton.InferInput("text", [len(array)], "BYTES")
    # Raw image bytes are not UTF-8: JSON cannot carry them, so images always travel as binary data.
    tensor.set_data_from_numpy(array, binary_data=binary or name == "tiny_image")
    return [tensor]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_v2_tritonclient_matches_the_model_in_process(byo, byo_server, name, binary):
    instances, expected = byo[2][name]
    client = triton.InferenceServerClient(byo_server.removeprefix("http://"))
    metadata = client.get_model_metadata(name)
    names = [o["name"] for o in metadata["outputs"]]
    result = client.infer(name, v2_inputs(name, instances, binary),
                          outputs=[triton.InferRequestedOutput(n, binary_data=binary) for n in names])
    labels = [x.decode() if isinstance(x, bytes) else x if isinstance(x, str) else int(x)
              for x in result.as_numpy("label")]
    probabilities = result.as_numpy("probabilities")
    rows = []
    for label, p in zip(labels, probabilities):
        keys = list(expected[0]["probabilities"]) if isinstance(expected[0]["probabilities"], dict) else None
        rows.append({"label": label, "probabilities": dict(zip(keys, p)) if keys else list(p)})
    assert_same(rows, expected)


def job_body(name: str, instances: list) -> dict:
    """A job for one of the instances (or all rows, for a model that takes numbers)."""
    if name in ("wine", "wine_onnx"):
        return {"model": name, "instances": instances}
    if name == "tiny_image":
        return {"model": name, "payload_base64": instances[0]["b64"], "content_type": "image/png"}
    return {"model": name, "text": instances[0]}


def test_jobs_run_by_the_built_in_worker_match_the_model_in_process(byo, byo_server):
    ids = {}
    for name in NAMES:
        status, body = get_json(byo_server + "/jobs", json.dumps(job_body(name, byo[2][name][0])).encode(),
                                {"Content-Type": "application/json"})
        assert status == 202, body
        ids[name] = body["id"]
    registry = ModelRegistry(byo[1], set(NAMES))
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(Server(byo_server, TOKEN), registry),
                              kwargs={"wait": 1, "max_jobs": len(NAMES), "stop": stop}, daemon=True)
    worker.start()
    worker.join(timeout=120)
    stop.set()
    for name, job_id in ids.items():
        status, job = get_json(f"{byo_server}/jobs/{job_id}")
        assert job["status"] == "succeeded", job
        expected = byo[2][name][1]
        result = job["result"]
        assert result["model"] == {"name": name, "version": "1"}
        if "predictions" in result:
            assert_same(result["predictions"], expected)
        else:
            assert_same([result], expected[:1])
    # The image runtime explains its answer: an occlusion map of the predicted label's probability.
    assert "drop in P(" in get_json(f"{byo_server}/jobs/{ids['tiny_image']}")[1]["result"]["heatmap_method"]


# --- the same bad input, the same answer, whatever the protocol ------------------------------

def v2_body(input_name: str, datatype: str, values: list, shape: list) -> dict:
    return {"inputs": [{"name": input_name, "datatype": datatype, "shape": shape, "data": values}]}


BAD = {
    "empty text": ("reviews", "text", "", 422),
    "text over the limit": ("reviews", "text", "x" * 50_001, 413),
    "not an image": ("tiny_image", "image", b"definitely not a png", 422),
    "decompression bomb": ("tiny_image", "image", "bomb", 413),
    "too few features": ("wine", "input", [1.0, 2.0], 400),
    "a feature that is not a number": ("wine", "input", ["a"] * 13, 400),
}


def bad_value(value):
    if value == "bomb":  # a few KB on the wire, 400 M pixels once decoded
        buffer = io.BytesIO()
        Image.new("1", (20000, 20000)).save(buffer, "PNG")
        return buffer.getvalue()
    return value


@pytest.mark.parametrize("case", list(BAD))
def test_same_bad_input_gets_the_same_status_through_every_protocol(byo_client, case):
    name, input_name, value, status = BAD[case]
    value = bad_value(value)
    is_bytes = isinstance(value, bytes)
    instance = {"b64": base64.b64encode(value).decode()} if is_bytes else value
    rest = byo_client.post(f"/models/{name}/predict", json={"instances": [instance]})
    if isinstance(value, list):
        v2 = byo_client.post(f"/v2/models/{name}/infer", json=v2_body(input_name, "FP64", value, [1, len(value)]))
        job = byo_client.post("/jobs", json={"model": name, "instances": [value]})
    else:
        data = base64.b64encode(value).decode() if is_bytes else value
        if is_bytes:
            body, headers = v2_binary(input_name, value)
            v2 = byo_client.post(f"/v2/models/{name}/infer", data=body, headers=headers)
        else:
            v2 = byo_client.post(f"/v2/models/{name}/infer", json=v2_body(input_name, "BYTES", [data], [1]))
        job = byo_client.post("/jobs", json={"model": name, "payload_base64": base64.b64encode(
            value if is_bytes else value.encode()).decode()})
    answers = {"REST": rest, "V2": v2, "jobs": job}
    if name == "reviews":  # the design card's own routes give the same answer
        answers["/review"] = byo_client.post("/review", data={"review": value})
    if name == "tiny_image":
        answers["/classify"] = byo_client.post("/classify", data={"image": (io.BytesIO(value), "x.png")},
                                               content_type="multipart/form-data")
    assert {k: r.status_code for k, r in answers.items()} == {k: status for k in answers}, \
        {k: r.json for k, r in answers.items()}
    assert all(r.json["error"] for r in answers.values())


def v2_binary(input_name: str, value: bytes) -> tuple[bytes, dict]:
    """A V2 request carrying one BYTES element with the binary tensor data extension."""
    spec = {"name": input_name, "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(value) + 4}}
    header = json.dumps({"inputs": [spec]}).encode()
    return header + len(value).to_bytes(4, "little") + value, {"Inference-Header-Content-Length": str(len(header))}


def test_nan_features_are_unusable_everywhere(byo_client):
    row = [float("nan")] + [1.0] * 12
    rest = byo_client.post("/models/wine/predict", data=json.dumps({"instances": [row]}), content_type="application/json")
    job = byo_client.post("/jobs", data=json.dumps({"model": "wine", "instances": [row]}), content_type="application/json")
    array = np.array([row], dtype=np.float64)
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 13],
                                     "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    v2 = byo_client.post("/v2/models/wine/infer", data=header + array.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(header))})
    # NaN is not JSON (400 on every JSON body); in a binary tensor it is a number the model cannot use (422).
    assert [r.status_code for r in (rest, v2, job)] == [400, 422, 400]


# --- refusals ----------------------------------------------------------------------------------

def test_untrusted_hash_mismatch_and_missing_class_are_refused_while_others_serve(byo, tmp_path, caplog):
    model_dir = tmp_path / "models"
    shutil.copytree(byo[1], model_dir)
    untrusted = make_pipeline(FunctionTransformer(double), LogisticRegression()).fit(np.array([[0.0], [1.0]]), [0, 1])
    sio.dump(untrusted, tmp_path / "untrusted.skops")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}", "MODEL_DIR": str(model_dir)})
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["models", "add", "doubler", str(tmp_path / "untrusted.skops")])
    double_type = f"{double.__module__}.double"
    assert refused.exit_code != 0 and double_type in refused.output and "--trust" in refused.output
    assert not (model_dir / "doubler").exists()
    # Added with --trust, then the manifest's trust is taken away: the server refuses it at load.
    trusted = runner.invoke(args=["models", "add", "doubler", str(tmp_path / "untrusted.skops"),
                                  "--trust", double_type])
    assert trusted.exit_code == 0, trusted.output
    manifest_path = model_dir / "doubler" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["trusted_types"] = []
    manifest_path.write_text(json.dumps(manifest))
    with open(model_dir / "wine" / "1" / "estimator.skops", "ab") as fh:  # tampered after it was added
        fh.write(b"\0")
    shouty = json.loads((model_dir / "shouty" / "1" / "manifest.json").read_text())
    shouty["config"]["class"] = "model:Missing"
    (model_dir / "shouty" / "1" / "manifest.json").write_text(json.dumps(shouty))

    registry = ModelRegistry(model_dir)
    registry_log = logging.getLogger("app.models.registry")
    registry_log.addHandler(caplog.handler)  # the app's JSON logging does not propagate to pytest's handler
    try:
        registry.load_all()
    finally:
        registry_log.removeHandler(caplog.handler)
    assert f"does not trust: {double_type}" in registry.refused["doubler/1"]
    assert "sha256 mismatch for estimator.skops" in registry.refused["wine/1"]
    assert "class 'Missing' not found in model.py" in registry.refused["shouty/1"]
    for key in ("doubler/1", "wine/1", "shouty/1"):
        assert f"refusing model {key}" in caplog.text
    assert {"reviews", "wine_onnx", "tiny_image", "review_sentiment", "malaria_cell"} <= set(registry.names())
    assert str(tmp_path) not in json.dumps(registry.refused)  # no file paths reach clients


def test_cli_refuses_what_it_cannot_serve(tmp_path, runner, app):
    app.settings = app.settings.model_copy(update={"model_dir": tmp_path / "models"})
    (tmp_path / "notes.txt").write_text("hello")
    unknown = runner.invoke(args=["models", "add", "notes", str(tmp_path / "notes.txt")])
    assert unknown.exit_code != 0 and "unknown model format" in unknown.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.py").write_text("class Model:\n    pass\n")
    broken = runner.invoke(args=["models", "add", "broken", str(tmp_path / "broken")])
    assert broken.exit_code != 0 and "not a subclass of app.models.base.Model" in broken.output
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    bad = runner.invoke(args=["models", "add", "bad", str(tmp_path / "bad.onnx")])
    assert bad.exit_code != 0 and "not a loadable ONNX model" in bad.output
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
