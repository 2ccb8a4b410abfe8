"""Recurrent layers. tf2onnx turns Keras 3's GRU (reset_after=True) into an ONNX `Loop`, which TVM 0.27 cannot
import, and Keras LSTM into the standard ONNX `LSTM`, which TVM 0.27 cannot import either.

Here the layer becomes one node `KerasGRU` whose ONNX function wraps the standard ONNX `GRU`
(linear_before_reset=1 is Keras' reset_after=True), so onnxruntime runs its own GRU kernel. TVM 0.27 has no
`GRU` (nor `LSTM`, `Loop`) converter: the converter pack's RNN/GRU/LSTM converters (one implementation, checked
by the ONNX node tests) unroll the recurrence, which needs the time length at compile time
(`compile --fix-dim time=N`); with a symbolic time axis they fail saying so. KerasGRU's converter is the pack's
GRU in batch-major layout; the standard ops reach TVM as the registry's gap converters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError


def gru_layer_inputs(layer: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    """ONNX W [1,3H,I], R [1,3H,H], B [1,6H] from a Keras GRU (gate order z, r, h in both)."""
    problems = []
    if not layer.return_sequences:
        problems.append("return_sequences=False")
    if layer.go_backwards or layer.stateful:
        problems.append("go_backwards/stateful")
    cell = layer.cell
    if not cell.reset_after:
        problems.append("reset_after=False")
    if cell.activation.__name__ != "tanh" or cell.recurrent_activation.__name__ != "sigmoid":
        problems.append("activations other than tanh/sigmoid")
    if not cell.use_bias:
        problems.append("use_bias=False")
    if problems:
        raise HarmonizerError(f"GRU layer {layer.name!r}: {', '.join(problems)} is not supported by the KerasGRU "
                              "strategy", "use return_sequences=True, reset_after=True and default activations")
    kernel, recurrent, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
    w = kernel.T[None]
    r = recurrent.T[None]
    b = np.concatenate([bias[0], bias[1]])[None]
    return [w, r, b], {"hidden_size": int(cell.units)}


def gru_function(domain: str, opset: int) -> Any:
    from onnx import AttributeProto, helper

    from harmonizer_deploy.custom_ops.catalog import _function

    gru = helper.make_node("GRU", ["xt", "W", "R", "B"], ["Y"], linear_before_reset=1)
    hidden = AttributeProto()
    hidden.name, hidden.ref_attr_name, hidden.type = "hidden_size", "hidden_size", AttributeProto.INT
    gru.attribute.append(hidden)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        gru,
        helper.make_node("Constant", [], ["dir_axis"], value_ints=[1]),
        helper.make_node("Squeeze", ["Y", "dir_axis"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["y"], perm=[1, 0, 2]),
    ]
    return _function(domain, "KerasGRU", ["x", "W", "R", "B"], ["y"], nodes, opset, ["hidden_size"])


def keras_gru_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    """KerasGRU (x [B, T, I], W, R, B) → [B, T, H]: the pack's GRU with layout=1, its direction axis dropped."""
    from tvm import relax

    from harmonizer_deploy.frontend.pack import gru

    outputs = bb.emit(gru(bb, inputs, {**attrs, "layout": 1, "linear_before_reset": 1}, ctx))
    return relax.op.squeeze(bb.emit(relax.TupleGetItem(outputs, 0)), [2])
