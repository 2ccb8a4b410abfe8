"""Run-time shape chains: TVM rejects them with dynamic dims; fixing the dims lets onnxslim fold them away."""

from __future__ import annotations

import numpy as np
import pytest

from harmonizer_deploy.custom_ops.tvm_prepare import prepare_for_tvm
from harmonizer_deploy.frontend.hook import from_onnx_with_converters


@pytest.fixture(scope="module")
def einsum_model():
    """tf2onnx's ONNX for a batched einsum: Shape → Gather → Concat → Reshape chains around a MatMul."""
    import tensorflow as tf
    import tf2onnx

    @tf.function(input_signature=(tf.TensorSpec([None, None, 8], tf.float32, name="x"),))
    def f(x):
        return {"y": tf.einsum("btd,bud->btu", x[:, :, :5], x[:, :, 3:])}

    proto, _ = tf2onnx.convert.from_function(f, input_signature=f.input_signature, opset=17)
    for value in proto.graph.input:
        for dim, name in zip(value.type.tensor_type.shape.dim, ("batch", "time"), strict=False):
            dim.dim_param = name
    assert any(n.op_type == "Shape" for n in proto.graph.node)
    return proto


def test_symbolic_shape_chain_is_rejected_by_tvm(einsum_model):
    prepared, _ = prepare_for_tvm(einsum_model)
    with pytest.raises(TypeError, match="Reshape requires the input new shape to be Shape"):
        from_onnx_with_converters(prepared, {})


def test_fixed_dims_fold_the_chain_and_tvm_matches_onnxruntime(einsum_model):
    import tvm
    from tvm import relax

    from harmonizer_deploy.core.onnxruntime import ort_session

    prepared, report = prepare_for_tvm(einsum_model, fix_dims={"batch": 2, "time": 6})
    assert report.folded.get("Shape") == 2 and report.folded.get("Concat", 0) >= 1
    assert report.to_dict()["fixed_dims"] == {"batch": 2, "time": 6}
    assert not any(n.op_type == "Shape" for n in prepared.graph.node)
    mod = from_onnx_with_converters(prepared, {})
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    x = np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32)
    (expected,) = ort_session(einsum_model).run(None, {"x": x})
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
