"""Work per inference (FLOPs of the convolutions and matmuls) and the machine's measured peak, for GFLOP/s."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def model_flops(onnx_path: str | Path, batch: int, time_steps: int) -> int:
    """Multiply-adds ×2 of every Conv / MatMul / Gemm at this input shape (elementwise ops are not counted)."""
    import onnx

    model = onnx.load(str(onnx_path))
    (first,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = first.type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = batch, time_steps
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if weight and out and all(out):
                # each output element: Cin/group * kh * kw multiply-adds
                total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(out):
                total += 2 * int(np.prod(out)) * a[-1]
    return total


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measured_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul throughput on all cores, through numpy's BLAS and onnxruntime's MLAS: the practical
    ceiling on this CPU. Both, because numpy's BLAS build may lack kernels for a new CPU (measured on Zen 5:
    numpy 262, MLAS 464 GFLOP/s), and a "peak" below what the model reaches would mislead."""
    import onnx
    from onnx import TensorProto, helper

    from harmonizer_deploy.core.onnxruntime import ort_session

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    numpy_s = _best_seconds(lambda: a @ b, repeats)
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak", value[:2], value[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    session = ort_session(model)
    mlas_s = _best_seconds(lambda: session.run(None, {"a": a, "b": b}), repeats)
    return 2 * size**3 / min(numpy_s, mlas_s) / 1e9
