"""int8 static quantization of an ONNX image network, and the rule that keeps or drops it."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.training.malaria_int8 import TOLERANCE, compare, one_core_session, probabilities, quantize


def small_cnn(path, seed=0):
    """NHWC float image -> conv 3x3 -> relu -> global average -> dense -> softmax over 2 classes."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
               numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
               numpy_helper.from_array(rng.normal(0, 1.0, (8, 2)).astype(np.float32), "dense_w"),
               numpy_helper.from_array(np.zeros(2, np.float32), "dense_b")]
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 16, 16, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_quantized_network_is_int8_and_close_to_float(tmp_path):
    fp32 = small_cnn(tmp_path / "fold.onnx")
    images = np.random.default_rng(1).random((96, 16, 16, 3), dtype=np.float32)
    int8 = quantize(fp32, tmp_path / "fold.int8.onnx", images[:64])
    ops = {node.op_type for node in onnx.load(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not (tmp_path / "fold.int8.prep.onnx").exists()  # the intermediate file is removed
    held_out = images[64:]
    p32 = probabilities(one_core_session(fp32), held_out)
    p8 = probabilities(one_core_session(int8), held_out)
    assert p32.shape == p8.shape == (32,)
    assert np.max(np.abs(p32 - p8)) < 0.05
    both_classes = one_core_session(int8).run(None, {"image": held_out})[0]
    assert np.allclose(both_classes.sum(axis=1), 1.0, atol=1e-6)  # the softmax is left in float: probabilities sum to 1


def fold(accuracy32, accuracy8, speed=(100.0, 300.0)):
    metrics = {"roc_auc": 0.99, "sensitivity": 0.95, "specificity": 0.97}
    rates = {"fp32": speed[0], "int8": speed[1]}
    return {"metrics": {**metrics, "accuracy": accuracy8},
            "quantization": {"float32_metrics": {**metrics, "accuracy": accuracy32},
                             "images_per_second_one_core": {"batch_1": rates, "batch_32": rates}}}


@pytest.mark.parametrize("loss, kept", [(0.0, True), (TOLERANCE - 0.0005, True), (TOLERANCE + 0.0005, False)])
def test_int8_is_kept_only_within_the_tolerance(loss, kept):
    comparison = compare([fold(0.96, 0.96 - loss), fold(0.97, 0.97 - loss)])
    assert comparison["kept"] is kept
    assert comparison["accuracy_lost"] == pytest.approx(loss, abs=1e-5)
    assert comparison["int8_speedup_median"] == {"batch_1": 3.0, "batch_32": 3.0}
    assert comparison["fp32"]["accuracy"]["mean"] == pytest.approx(0.965)
