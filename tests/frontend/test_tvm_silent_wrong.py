"""Wrong results TVM 0.27's Relax ONNX frontend gives without raising (listed in COVERAGE.md).

Each test pins the wrong behaviour, so that a TVM upgrade that fixes it fails here and the list gets updated,
and, where the converter pack covers the op, shows the pack's result is right.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tvm")


def _compile_run(model: onnx.ModelProto, inputs: list[np.ndarray], converters: dict | None = None) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    from harmonizer_deploy.frontend.hook import from_onnx_with_converters

    mod = from_onnx_with_converters(model, converters, keep_params_in_input=False)
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(x) for x in inputs])
    items = list(out) if not hasattr(out, "numpy") else [out]
    return [np.asarray(o.numpy()) for o in items]


def _reference(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {vi.name: x for vi, x in zip(model.graph.input, inputs, strict=True)}
    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]


def _layernorm_model() -> onnx.ModelProto:
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv_std"], axis=-1)
    graph = helper.make_graph(
        [node],
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, [2, 3, 1]),
            helper.make_tensor_value_info("inv_std", TensorProto.FLOAT, [2, 3, 1]),
        ],
        [
            onnx.numpy_helper.from_array(np.linspace(0.5, 2.0, 4, dtype=np.float32), "scale"),
            onnx.numpy_helper.from_array(np.linspace(-1.0, 1.0, 4, dtype=np.float32), "bias"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_layernorm_mean_invstddev_are_placeholders():
    model = _layernorm_model()
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32) * 3 + 1
    want = _reference(model, [x])
    got = _compile_run(model, [x])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)  # Y is right
    # Mean and InvStdDev are not the statistics: wrong shape, and not the values.
    for i in (1, 2):
        assert got[i].shape != want[i].shape or not np.allclose(got[i], want[i], rtol=1e-3)

    from harmonizer_deploy.frontend.pack import CONVERTERS

    fixed = _compile_run(model, [x], CONVERTERS)
    for g, w in zip(fixed, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _attention23_model() -> onnx.ModelProto:
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=2, kv_num_heads=2)
    graph = helper.make_graph(
        [node],
        "attn",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 3, 8]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 5, 8]),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 5, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def test_opset23_attention_goes_to_com_microsoft_converter():
    from tvm.relax.frontend.onnx import from_onnx, onnx_frontend

    # One converter for both ops, keyed by op_type alone; it is the com.microsoft contrib op's.
    converter = onnx_frontend._get_convert_map()["Attention"]
    assert "microsoft" in (converter.__doc__ or "")
    # So a standard opset-23 Attention (q, k, v inputs) is read as (input, weight, bias) with num_heads.
    with pytest.raises(KeyError, match="num_heads"):
        from_onnx(_attention23_model(), keep_params_in_input=False)


@pytest.mark.parametrize(
    ("to", "largest"), [(TensorProto.FLOAT8E4M3FN, 448.0), (TensorProto.FLOAT8E5M2, 57344.0)], ids=["e4m3fn", "e5m2"]
)
def test_float8_cast_does_not_saturate(to, largest):
    nodes = [helper.make_node("Cast", ["x"], ["f8"], to=to), helper.make_node("Cast", ["f8"], ["y"], to=1)]
    graph = helper.make_graph(
        nodes,
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    x = np.array([1e5, 1e6, -1e6], np.float32)
    want = _reference(model, [x])[0]
    np.testing.assert_array_equal(want, [largest, largest, -largest])  # saturate=1 is the default
    got = _compile_run(model, [x])[0]
    assert not np.array_equal(got, want), f"TVM now saturates float8 casts ({got}); update COVERAGE.md"

    from harmonizer_deploy.frontend.pack import CONVERTERS

    np.testing.assert_array_equal(_compile_run(model, [x], CONVERTERS)[0], want)


@pytest.mark.parametrize(("op", "sign"), [("ReduceMax", -1.0), ("ReduceMin", 1.0)])
def test_reduce_max_of_all_neg_inf_is_finite(op, sign):
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)
    graph = helper.make_graph(
        [node],
        "reduce",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])],
        [onnx.numpy_helper.from_array(np.array([-1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    x = sign * np.array([[np.inf, np.inf], [0.0, np.inf]], np.float32)
    want = _reference(model, [x])[0]
    np.testing.assert_array_equal(want.ravel(), [sign * np.inf, 0.0])
    got = _compile_run(model, [x])[0]
    assert got.ravel()[1] == 0.0
    assert np.isfinite(got.ravel()[0]) and got.ravel()[0] == sign * np.finfo(np.float32).max
    from harmonizer_deploy.frontend.pack import CONVERTERS

    np.testing.assert_array_equal(_compile_run(model, [x], CONVERTERS)[0], want)  # the pack's fix-up
