"""The worked example of docs/custom-ops.md, run: a new registry entry works with every strategy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import harmonizer_deploy as hd
from harmonizer_deploy.custom_ops import CustomOp, default_registry
from harmonizer_deploy.custom_ops.catalog import _function


@keras.saving.register_keras_serializable(package="harmonizer_deploy_tests")
class Square(keras.layers.Layer):
    def call(self, h):
        return h * h


@keras.saving.register_keras_serializable(package="harmonizer_deploy_tests")
class SquareRewritten(keras.layers.Layer):
    def call(self, h):
        return keras.ops.multiply(h, h)


def _square_function(domain: str, opset: int):
    from onnx import helper

    return _function(domain, "Square", ["x"], ["y"], [helper.make_node("Mul", ["x", "x"], ["y"])], opset)


def _square_tvm(bb, inputs, attrs, ctx):
    from tvm import relax

    return relax.op.multiply(inputs[0], inputs[0])


@pytest.fixture
def square_entry():
    registry = default_registry()
    registry.register(CustomOp(
        op_type="Square", keras_class="Square", summary="elementwise square",
        rewrite=lambda layer: SquareRewritten(name=layer.name),
        layer_inputs=lambda layer: ([], {}),
        onnx_function=_square_function, tvm_converter=_square_tvm, preferred="custom-op",
    ))
    yield
    registry.unregister("Square")


@pytest.fixture(scope="module")
def square_model(tmp_path_factory):
    keras.utils.set_random_seed(5)
    x = keras.Input((None, 46, 8), name="pianoroll_mask")
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    h = Square(name="square")(h)
    model = keras.Model(x, keras.layers.Softmax(axis=2, name="probs")(h))
    path = tmp_path_factory.mktemp("square") / "square.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("strategy", ["rewrite", "custom-op", "decompose"])
def test_docs_example_entry_with_each_strategy(square_entry, square_model, tmp_path, strategy):
    result = hd.convert(square_model, tmp_path / "model.onnx", custom_op_strategy=strategy)
    assert result.custom_ops == {"square": strategy} and result.max_abs_err <= 1e-5
    if strategy == "custom-op":
        assert result.op_types["ai.harmonizer::Square"] == 1
    hd.compile(tmp_path / "model.onnx", "cpu", tmp_path / "cpu")
    report = hd.verify(tmp_path / "cpu", "cpu", num_inputs=1, batch=1, time_steps=8)
    assert report.passed and np.isfinite(report.outputs[0]["max_abs_err"])


def test_without_the_entry_the_layer_converts_as_plain_ops(square_model, tmp_path):
    """A custom layer of standard ops needs no entry: the registry is only for what breaks the chain."""
    result = hd.convert(square_model, tmp_path / "model.onnx")
    assert result.custom_ops == {} and "Mul" in result.op_types
