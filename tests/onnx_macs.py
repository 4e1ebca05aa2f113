"""Multiply-add count read from an exported ONNX graph: the tests' independent check of the manifest."""
from __future__ import annotations

from math import prod
from pathlib import Path


def onnx_multiply_adds(path: Path) -> int:
    """Multiply-adds of one image through the Conv, MatMul and Gemm nodes of an ONNX graph."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    first_input = model.graph.input[0].type.tensor_type.shape.dim[0]
    first_input.Clear()
    first_input.dim_value = 1  # batch of one
    model = shape_inference.infer_shapes(model)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            c_out, c_in_per_group, k_h, k_w = weights[node.input[1]]
            out_shape = shapes[node.output[0]]  # N, C, H, W
            total += prod(out_shape[2:]) * c_out * c_in_per_group * k_h * k_w
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            total += prod(weights[node.input[1]])
    return int(total)
