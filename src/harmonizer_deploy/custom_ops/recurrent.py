"""Recurrent layers. tf2onnx turns Keras 3's GRU (reset_after=True) into an ONNX `Loop`, which TVM 0.27 cannot
import, and Keras LSTM into the standard ONNX `LSTM`, which TVM 0.27 cannot import either.

Here the layer becomes one node `KerasGRU` whose ONNX function wraps the standard ONNX `GRU`
(linear_before_reset=1 is Keras' reset_after=True), so onnxruntime runs its own GRU kernel. TVM 0.27 has no
`GRU` (nor `LSTM`, `Loop`) converter: the Relax converters here unroll the recurrence, which needs the time
length at compile time (`compile --fix-dim time=N`); with a symbolic time axis they fail saying so. The
standard `LSTM` gets the same kind of unrolled converter (a gap converter: tf2onnx's output needs no entry).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import HarmonizerError


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

    from .catalog import _function

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


def _static_time(x: Any, axis: int) -> int:
    from tvm.ir.prim.expr import IntImm

    shape = getattr(x.ty, "shape", None)  # TVM 0.27: `ty` (was struct_info); None when the shape is unknown
    dim = shape[axis] if shape is not None else None
    if not isinstance(dim, IntImm):
        raise HarmonizerError(
            "TVM has no GRU/LSTM/Loop converter; the unrolled recurrence needs a fixed time length",
            "compile with --fix-dim time=N (and verify with --time N)",
        )
    return int(dim)


def _unrolled_gru(bb: Any, x_bti: Any, w: Any, r: Any, b: Any, hidden: int, linear_before_reset: bool) -> Any:
    """[B, T, I] → [B, T, H], forward GRU, ONNX gate order z, r, h; W/R/B in ONNX layout."""
    from tvm import relax

    op = relax.op
    if not linear_before_reset:
        raise HarmonizerError("GRU with linear_before_reset=0 has no TVM converter here",
                              "export the Keras GRU with reset_after=True (the Keras 3 default)")
    steps = _static_time(x_bti, 1)
    w2 = bb.emit(op.squeeze(w, [0]))
    r2 = bb.emit(op.squeeze(r, [0]))
    b2 = bb.emit(op.squeeze(b, [0]))
    wb = bb.emit(op.strided_slice(b2, axes=[0], begin=[0], end=[3 * hidden]))
    rb = bb.emit(op.strided_slice(b2, axes=[0], begin=[3 * hidden], end=[6 * hidden]))
    xs = bb.emit(op.add(op.matmul(x_bti, op.permute_dims(w2, [1, 0])), wb))  # [B, T, 3H]
    rt = bb.emit(op.permute_dims(r2, [1, 0]))

    def gate(v: Any, k: int) -> Any:
        return bb.emit(op.strided_slice(v, axes=[1], begin=[k * hidden], end=[(k + 1) * hidden]))

    first = bb.emit(op.squeeze(op.strided_slice(xs, axes=[1], begin=[0], end=[1]), [1]))
    h = bb.emit(op.zeros_like(gate(first, 0)))
    outputs = []
    for t in range(steps):
        xt = bb.emit(op.squeeze(op.strided_slice(xs, axes=[1], begin=[t], end=[t + 1]), [1]))
        hr = bb.emit(op.add(op.matmul(h, rt), rb))
        z = bb.emit(op.sigmoid(op.add(gate(xt, 0), gate(hr, 0))))
        reset = bb.emit(op.sigmoid(op.add(gate(xt, 1), gate(hr, 1))))
        candidate = bb.emit(op.tanh(op.add(gate(xt, 2), op.multiply(reset, gate(hr, 2)))))
        one = relax.const(np.float32(1.0), "float32")
        h = bb.emit(op.add(op.multiply(op.subtract(one, z), candidate), op.multiply(z, h)))
        outputs.append(bb.emit(op.expand_dims(h, 1)))
    return op.concat(outputs, axis=1)


def keras_gru_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    x, w, r, b = inputs
    return _unrolled_gru(bb, x, w, r, b, int(attrs["hidden_size"]), True)


def onnx_gru_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    """The standard ONNX GRU (layout 0, forward, default activations, X W R B only), for decomposed KerasGRU."""
    from tvm import relax

    op = relax.op
    x, w, r = inputs[:3]
    b = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
    extra = [i for i in inputs[4:] if i is not None]
    direction = attrs.get("direction", b"forward")
    if extra or attrs.get("layout", 0) != 0 or direction not in (b"forward", "forward") or "activations" in attrs:
        raise HarmonizerError("ONNX GRU with sequence_lens/initial_h, layout=1, reverse/bidirectional or custom "
                              "activations has no TVM converter here", "use a forward GRU with default options")
    if b is None:
        raise HarmonizerError("ONNX GRU without bias B has no TVM converter here", "export the GRU with a bias")
    hidden = int(attrs["hidden_size"])
    y = bb.emit(_unrolled_gru(bb, bb.emit(op.permute_dims(x, [1, 0, 2])), w, r, b, hidden,
                              bool(attrs.get("linear_before_reset", 0))))
    y_tbh = bb.emit(op.permute_dims(y, [1, 0, 2]))
    last = bb.emit(op.strided_slice(y_tbh, axes=[0], begin=[_static_time(y_tbh, 0) - 1],
                                    end=[_static_time(y_tbh, 0)]))
    return relax.Tuple([bb.emit(op.expand_dims(y_tbh, 1)), last])


def _optional(inputs: list[Any], index: int) -> Any:
    return inputs[index] if len(inputs) > index else None


def _names(value: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in (value or [])]


def _unrolled_lstm(bb: Any, x_bti: Any, w: Any, r: Any, b: Any, h0: Any, c0: Any, hidden: int) -> tuple[Any, Any]:
    """[B, T, I] → ([B, T, H], last cell state [B, H]); forward LSTM, ONNX gate order i, o, f, c; no peepholes.

    W [1, 4H, I], R [1, 4H, H], B [1, 8H] (or None), h0/c0 [1, B, H] (or None: zeros), as in ONNX."""
    from tvm import relax

    op = relax.op
    steps = _static_time(x_bti, 1)
    xs = bb.emit(op.matmul(x_bti, op.permute_dims(op.squeeze(w, [0]), [1, 0])))  # [B, T, 4H]
    if b is not None:
        b2 = bb.emit(op.squeeze(b, [0]))
        xs = bb.emit(op.add(xs, op.add(op.strided_slice(b2, axes=[0], begin=[0], end=[4 * hidden]),
                                       op.strided_slice(b2, axes=[0], begin=[4 * hidden], end=[8 * hidden]))))
    rt = bb.emit(op.permute_dims(op.squeeze(r, [0]), [1, 0]))

    def gate(v: Any, k: int) -> Any:
        return bb.emit(op.strided_slice(v, axes=[1], begin=[k * hidden], end=[(k + 1) * hidden]))

    def step_input(t: int) -> Any:
        return bb.emit(op.squeeze(op.strided_slice(xs, axes=[1], begin=[t], end=[t + 1]), [1]))

    zeros = bb.emit(op.zeros_like(gate(step_input(0), 0)))
    h = bb.emit(op.squeeze(h0, [0])) if h0 is not None else zeros
    c = bb.emit(op.squeeze(c0, [0])) if c0 is not None else zeros
    outputs = []
    for t in range(steps):
        g = bb.emit(op.add(step_input(t), op.matmul(h, rt)))
        i, o, f = (bb.emit(op.sigmoid(gate(g, k))) for k in range(3))
        c = bb.emit(op.add(op.multiply(f, c), op.multiply(i, op.tanh(gate(g, 3)))))
        h = bb.emit(op.multiply(o, op.tanh(c)))
        outputs.append(bb.emit(op.expand_dims(h, 1)))
    return bb.emit(op.concat(outputs, axis=1)), c


def onnx_lstm_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    """The standard ONNX LSTM as tf2onnx writes it for Keras LSTM: layout 0, forward, default activations, no
    sequence_lens, peepholes, clip or input_forget; optional B, initial_h and initial_c."""
    from tvm import relax

    op = relax.op
    x, w, r = inputs[:3]
    b, seq, h0, c0, peep = (_optional(inputs, k) for k in range(3, 8))
    problems = []
    if seq is not None or peep is not None:
        problems.append("sequence_lens/peepholes")
    if attrs.get("layout", 0) != 0 or attrs.get("input_forget", 0) or "clip" in attrs:
        problems.append("layout=1/input_forget/clip")
    if _names([attrs.get("direction", b"forward")]) != ["forward"]:
        problems.append("reverse/bidirectional direction")
    if _names(attrs.get("activations")) not in ([], ["Sigmoid", "Tanh", "Tanh"]):
        problems.append(f"activations {_names(attrs.get('activations'))}")
    if problems:
        raise HarmonizerError(f"ONNX LSTM with {', '.join(problems)} has no TVM converter here",
                              "use a forward Keras LSTM with default activations")
    hidden = int(attrs["hidden_size"])
    y, c = _unrolled_lstm(bb, bb.emit(op.permute_dims(x, [1, 0, 2])), w, r, b, h0, c0, hidden)
    y_tbh = bb.emit(op.permute_dims(y, [1, 0, 2]))
    steps = _static_time(x, 0)  # not from y: with a dynamic batch, initial_h may have no static shape
    last_h = bb.emit(op.strided_slice(y_tbh, axes=[0], begin=[steps - 1], end=[steps]))
    return relax.Tuple([bb.emit(op.expand_dims(y_tbh, 1)), last_h, bb.emit(op.expand_dims(c, 0))])
