"""Make examples/iris_svc.onnx: a scikit-learn SVC without probabilities on the iris data (bundled with
scikit-learn), exported with skl2onnx, to try `modelserve models add` on an ONNX file:

    python examples/make_iris_onnx.py          # needs scikit-learn and skl2onnx (requirements-dev.txt)

Its second output holds decision scores, not probabilities; the server says so (`decision_scores`).
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from skl2onnx import to_onnx

HERE = Path(__file__).resolve().parent


def main(path: Path = HERE / "iris_svc.onnx") -> Path:
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), SVC()).fit(X, y)
    path.write_bytes(to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False},
                             target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString())
    return path


if __name__ == "__main__":
    print(main())
