"""Keras GRU: tf2onnx writes a Loop that TVM cannot import; the registry makes it an ONNX GRU, unrolled in TVM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harmonizer_deploy.core.errors import HarmonizerError

TIME = 7


@pytest.fixture(scope="module")
def gru():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x_in = keras.Input((None, 6))
    model = keras.Model(x_in, keras.layers.GRU(5, return_sequences=True, name="gru")(x_in))

    @tf.function(input_signature=(tf.TensorSpec([None, None, 6], tf.float32, name="x"),))
    def call(x):
        return {"y": model(x)}

    x = np.random.default_rng(1).standard_normal((2, TIME, 6)).astype(np.float32)
    return model, call, x, model(x).numpy()


def _convert(model, call, strategy: str | None):
    import tf2onnx

    from harmonizer_deploy.custom_ops.emit import attach_functions
    from harmonizer_deploy.custom_ops.plan import plan_conversion

    kwargs = {}
    plan = None
    if strategy:
        plan = plan_conversion(SimpleNamespace(keras_model=model), strategy, Path("unused.onnx"))
        kwargs = plan.extensions.kwargs()
    proto, _ = tf2onnx.convert.from_function(call, input_signature=call.input_signature, opset=17, **kwargs)
    if plan:
        attach_functions(proto, plan.extensions.emitted, 17)
    for value in proto.graph.input:
        for dim, name in zip(value.type.tensor_type.shape.dim, ("batch", "time"), strict=False):
            dim.dim_param = name
    return proto


def _tvm(proto, fix_dims):
    from harmonizer_deploy.custom_ops import default_registry
    from harmonizer_deploy.custom_ops.tvm_prepare import import_relax, prepare_for_tvm

    prepared, _ = prepare_for_tvm(proto, fix_dims=fix_dims)
    return import_relax(prepared, default_registry().tvm_converters())


def test_plain_tf2onnx_gru_is_a_loop_and_scan_says_tvm_cannot_import_it(gru):
    from harmonizer_deploy.coverage.ops_scan import tvm_known_ops

    proto = _convert(gru[0], gru[1], None)
    assert "Loop" in {n.op_type for n in proto.graph.node}
    assert not {"Loop", "GRU", "LSTM"} & tvm_known_ops()


@pytest.mark.parametrize("strategy", ["custom-op", "decompose"])
def test_gru_as_onnx_gru_matches_keras_in_onnxruntime_and_tvm(gru, strategy):
    import onnx
    import tvm
    from tvm import relax

    from harmonizer_deploy.core.onnxruntime import ort_session

    model, call, x, expected = gru
    proto = _convert(model, call, strategy)
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == ["KerasGRU"]
    (function,) = [f for f in proto.functions if f.name == "KerasGRU"]
    assert "GRU" in {n.op_type for n in function.node}
    (actual,) = ort_session(proto).run(None, {"x": x})
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    with pytest.raises(HarmonizerError, match="fixed time length"):
        _tvm(proto, None)
    vm = relax.VirtualMachine(tvm.compile(_tvm(proto, {"time": TIME}), target="llvm"), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, atol=1e-5)


def test_unsupported_gru_options_are_named():
    import keras

    from harmonizer_deploy.custom_ops.recurrent import gru_layer_inputs

    layer = keras.layers.GRU(3, return_sequences=False, reset_after=False)
    layer.build((None, None, 4))
    with pytest.raises(HarmonizerError, match="return_sequences=False, reset_after=False"):
        gru_layer_inputs(layer)


@pytest.fixture(scope="module")
def lstm():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x_in = keras.Input((None, 6))
    model = keras.Model(x_in, keras.layers.LSTM(5, return_sequences=True, name="lstm")(x_in))

    @tf.function(input_signature=(tf.TensorSpec([None, None, 6], tf.float32, name="x"),))
    def call(x):
        return {"y": model(x)}

    x = np.random.default_rng(2).standard_normal((2, TIME, 6)).astype(np.float32)
    return model, call, x, model(x).numpy()


def test_keras_lstm_is_an_onnx_lstm_that_tvm_unrolls(lstm):
    """tf2onnx writes the standard LSTM (no registry entry needed); TVM imports it through the gap converter."""
    import tvm
    from tvm import relax

    from harmonizer_deploy.core.onnxruntime import ort_session
    from harmonizer_deploy.coverage.ops_scan import tvm_known_ops

    model, call, x, expected = lstm
    proto = _convert(model, call, None)
    assert "LSTM" in {n.op_type for n in proto.graph.node} and "Loop" not in {n.op_type for n in proto.graph.node}
    assert "LSTM" not in tvm_known_ops()
    (actual,) = ort_session(proto).run(None, {"x": x})
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    with pytest.raises(HarmonizerError, match="fixed time length"):
        _tvm(proto, None)
    # tf2onnx computes the zero initial state from the batch size at run time (Shape → Expand), which TVM's
    # default pipeline cannot lower: fixing batch too lets onnxslim fold it to a constant
    vm = relax.VirtualMachine(tvm.compile(_tvm(proto, {"batch": 2, "time": TIME}), target="llvm"), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, atol=1e-5)
