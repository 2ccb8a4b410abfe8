"""The registry's entries: melody/harmony attention, pitch-range masked softmax, cumulative log-sum-exp.

Per op: a standard-op Keras rewrite, the ONNX function of standard ops (onnxruntime's implementation and the
decomposition), and a Relax converter for TVM. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonizer_deploy.custom_ops.registry import CustomOp, CustomOpRegistry

# ---------------------------------------------------------------------------------------------------------
# ONNX function helpers (bodies of standard ops; `opset` picks the signature of ops that changed at 18)


def _reduce(op: str, x: str, out: str, axes: list[int] | None, keepdims: int, opset: int) -> list[Any]:
    from onnx import helper

    if axes is None:
        return [helper.make_node(op, [x], [out], keepdims=keepdims)]
    if opset >= 18:
        return [helper.make_node("Constant", [], [out + "_axes"], value_ints=axes),
                helper.make_node(op, [x, out + "_axes"], [out], keepdims=keepdims)]
    return [helper.make_node(op, [x], [out], axes=axes, keepdims=keepdims)]


def _ref(name: str, attr_type: int) -> Any:
    """An attribute of a function-body node that refers to the calling node's attribute `name`."""
    from onnx import AttributeProto

    proto = AttributeProto()
    proto.name = {AttributeProto.FLOAT: "value_float", AttributeProto.INT: "value_int"}.get(attr_type, name)
    proto.ref_attr_name = name
    proto.type = attr_type
    return proto


def _function(domain: str, name: str, inputs: list[str], outputs: list[str], nodes: list[Any], opset: int,
              attributes: list[str] = ()) -> Any:
    from onnx import helper

    return helper.make_function(domain, name, inputs, outputs, nodes, [helper.make_opsetid("", opset)],
                                list(attributes))


# ---------------------------------------------------------------------------------------------------------
# MelodyHarmonyAttention


def _attention_rewrite(layer: Any) -> Any:
    from harmonizer_deploy.music.rewrite_layers import MelodyHarmonyAttentionRewritten

    return MelodyHarmonyAttentionRewritten(key_dim=layer.key_dim, name=layer.name)


def _attention_inputs(layer: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    weights = [np.asarray(w.numpy(), np.float32) for w in (layer.wq, layer.wk, layer.wv)]
    return weights, {"scale": float(1.0 / np.sqrt(layer.key_dim))}


def _attention_function(domain: str, opset: int) -> Any:
    from onnx import AttributeProto, helper

    scale = helper.make_node("Constant", [], ["scale_attr"])
    scale.attribute.append(_ref("scale", AttributeProto.FLOAT))
    # value_float may come back as a double once inlined (TVM's Constant does that): pin it to float32
    cast = helper.make_node("Cast", ["scale_attr"], ["scale"], to=1)
    nodes = [
        *_reduce("ReduceMean", "h", "harmony", [2], 0, opset),
        *_reduce("ReduceMax", "h", "melody", [2], 0, opset),
        helper.make_node("MatMul", ["harmony", "wq"], ["q"]),
        helper.make_node("MatMul", ["melody", "wk"], ["k"]),
        helper.make_node("MatMul", ["melody", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["raw_scores"]),
        scale,
        cast,
        helper.make_node("Mul", ["raw_scores", "scale"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", "v"], ["context"]),
        helper.make_node("Constant", [], ["pitch_axis"], value_ints=[2]),
        helper.make_node("Unsqueeze", ["context", "pitch_axis"], ["context4"]),
        helper.make_node("Add", ["h", "context4"], ["y"]),
    ]
    return _function(domain, "MelodyHarmonyAttention", ["h", "wq", "wk", "wv"], ["y"], nodes, opset, ["scale"])


def _attention_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    from tvm import relax

    op = relax.op
    h, wq, wk, wv = inputs
    harmony = bb.emit(op.mean(h, axis=[2], keepdims=False))
    melody = bb.emit(op.max(h, axis=[2], keepdims=False))
    q = bb.emit(op.matmul(harmony, wq))
    k = bb.emit(op.matmul(melody, wk))
    v = bb.emit(op.matmul(melody, wv))
    scores = bb.emit(op.multiply(op.matmul(q, op.permute_dims(k, [0, 2, 1])),
                                 relax.const(np.float32(attrs["scale"]), "float32")))
    context = bb.emit(op.matmul(op.nn.softmax(scores, axis=-1), v))
    return op.add(h, op.expand_dims(context, 2))


# ---------------------------------------------------------------------------------------------------------
# PitchMaskedSoftmax


def _softmax_rewrite(layer: Any) -> Any:
    from harmonizer_deploy.music.rewrite_layers import PitchMaskedSoftmaxRewritten

    return PitchMaskedSoftmaxRewritten(name=layer.name)


def _softmax_inputs(layer: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
    from harmonizer_deploy.music.custom_layers import pitch_range_bias

    return [pitch_range_bias()], {}


def _softmax_function(domain: str, opset: int) -> Any:
    from onnx import helper

    nodes = [helper.make_node("Add", ["logits", "bias"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=2)]
    return _function(domain, "PitchMaskedSoftmax", ["logits", "bias"], ["probs"], nodes, opset)


def _softmax_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    from tvm import relax

    logits, bias = inputs
    return relax.op.nn.softmax(bb.emit(relax.op.add(logits, bias)), axis=2)


# ---------------------------------------------------------------------------------------------------------
# CumulativeLogsumexp (TF op without a tf2onnx handler)


def _logsumexp_rewrite(layer: Any) -> Any:
    from harmonizer_deploy.music.rewrite_layers import CausalLogSumExpPoolRewritten

    return CausalLogSumExpPoolRewritten(name=layer.name)


def _logsumexp_tf_attributes(graph: Any, node: Any) -> dict[str, Any]:
    from harmonizer_deploy.core.errors import HarmonizerError

    axis_node = node.inputs[1]
    if not axis_node.is_const():
        raise HarmonizerError(f"{node.name}: CumulativeLogsumexp with a non-constant axis",
                              "use a constant axis in the model")
    return {"axis": int(axis_node.get_tensor_value()), "exclusive": int(bool(node.get_attr_value("exclusive", 0))),
            "reverse": int(bool(node.get_attr_value("reverse", 0)))}


def _logsumexp_function(domain: str, opset: int) -> Any:
    """log(cumsum(exp(x - m))) + m, m the max over the whole tensor (the axis is an attribute, and ReduceMax
    takes axes as an attribute before opset 18 and an input after: a global max works in every opset)."""
    from onnx import AttributeProto, helper

    axis = helper.make_node("Constant", [], ["axis_value"])
    axis.attribute.append(_ref("axis", AttributeProto.INT))
    cumsum = helper.make_node("CumSum", ["e", "axis_value"], ["c"])
    cumsum.attribute.extend([_named_ref("exclusive"), _named_ref("reverse")])
    nodes = [
        *_reduce("ReduceMax", "x", "m", None, 1, opset),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Exp", ["d"], ["e"]),
        axis,
        cumsum,
        helper.make_node("Log", ["c"], ["l"]),
        helper.make_node("Add", ["l", "m"], ["y"]),
    ]
    return _function(domain, "CumulativeLogsumexp", ["x"], ["y"], nodes, opset, ["axis", "exclusive", "reverse"])


def _named_ref(name: str) -> Any:
    from onnx import AttributeProto

    proto = AttributeProto()
    proto.name = name
    proto.ref_attr_name = name
    proto.type = AttributeProto.INT
    return proto


def _logsumexp_tvm(bb: Any, inputs: list[Any], attrs: dict, ctx: Any) -> Any:
    from tvm import relax

    op = relax.op
    (x,) = inputs
    axis = int(attrs["axis"])
    reverse = bool(attrs.get("reverse", 0))
    m = bb.emit(op.max(x, axis=[axis], keepdims=True))  # per-axis max: as stable as TF's own kernel
    e = bb.emit(op.exp(op.subtract(x, m)))
    if reverse:
        e = bb.emit(op.flip(e, axis))
    c = bb.emit(op.cumsum(e, axis=axis, exclusive=bool(attrs.get("exclusive", 0))))
    if reverse:
        c = bb.emit(op.flip(c, axis))
    return op.add(op.log(c), m)


def register_all(registry: CustomOpRegistry) -> None:
    from harmonizer_deploy.custom_ops.recurrent import gru_function, gru_layer_inputs, keras_gru_tvm
    from harmonizer_deploy.frontend.pack import CONVERTERS

    registry.register(CustomOp(
        op_type="KerasGRU", keras_class="GRU",
        summary="Keras GRU (reset_after) as the ONNX GRU op instead of tf2onnx's Loop; TVM unrolls it",
        layer_inputs=gru_layer_inputs, onnx_function=gru_function, tvm_converter=keras_gru_tvm,
        preferred="custom-op",
    ))
    # Standard ops TVM 0.27 lacks or gets wrong (GRU/LSTM a decomposed KerasGRU or tf2onnx's Keras LSTM becomes,
    # LayerNormalization's extra outputs, float8 casts, ...): the converter pack, checked by the ONNX node tests
    # (`harmonizer-deploy coverage`), so compile imports what the coverage report says TVM + pack can.
    registry.gap_converters.update(CONVERTERS)
    registry.register(CustomOp(
        op_type="MelodyHarmonyAttention", keras_class="MelodyHarmonyAttention",
        summary="attention over time between harmony (pitch-mean) and melody (pitch-max) features",
        rewrite=_attention_rewrite, layer_inputs=_attention_inputs, onnx_function=_attention_function,
        tvm_converter=_attention_tvm, preferred="custom-op",
    ))
    registry.register(CustomOp(
        op_type="PitchMaskedSoftmax", keras_class="PitchMaskedSoftmax",
        summary="softmax over pitch per voice, zero outside each voice's SATB range",
        rewrite=_softmax_rewrite, layer_inputs=_softmax_inputs, onnx_function=_softmax_function,
        tvm_converter=_softmax_tvm, preferred="decompose",
    ))
    registry.register(CustomOp(
        op_type="CumulativeLogsumexp", keras_class="CausalLogSumExpPool", tf_op="CumulativeLogsumexp",
        summary="running log-sum-exp over time (TF op with no tf2onnx handler)",
        rewrite=_logsumexp_rewrite, tf_attributes=_logsumexp_tf_attributes, onnx_function=_logsumexp_function,
        tvm_converter=_logsumexp_tvm, preferred="custom-op",
    ))
