"""Static-shape folding, the pre-pass of the converter pack: shape arithmetic becomes initializers.

Why: TVM 0.27 imports `Shape` as a ShapeExpr, and every converter outside a short list refuses ShapeExpr
inputs ("Node cannot handle ShapeExpr inputs"), so the expanded function bodies of LayerNormalization,
RMSNormalization, Attention, GroupNormalization... fail to import although all their shapes are known.
When a model's shapes are static (exported models, the "static" coverage variant), `Shape`/`Size` of a
tensor is a known integer vector; this pass replaces it, and the integer-only computations that consume
it, by initializers, the way shape-simplifying tools do for exported models.

Only integer/bool values that depend on a shape (or on constant rank<=1 integer vectors: sizes, axes, flags,
which is plain constant folding) are folded, and never a graph output: tensors of real data are never computed
here, so what passes in the "TVM + our pack" column is still computed by TVM. An `If` whose condition is
thereby known is replaced by the branch it takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from harmonizer_deploy.frontend.branch import branch_nodes, graph_names, taken_branch

# Ops whose integer results are folded when all inputs are known and at least one derives from a shape.
_FOLDABLE = {
    "Abs", "Add", "And", "Cast", "CastLike", "Concat", "ConstantOfShape", "Div", "Equal", "Expand", "Gather",
    "Greater", "GreaterOrEqual", "Identity", "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Not",
    "Or", "Range", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSum", "Reshape", "Shape", "Size", "Slice",
    "Split", "Squeeze", "Sub", "Unsqueeze", "Where",
}  # fmt: skip
_MAX_ELEMENTS = 4096  # shape vectors are tiny; anything bigger is data, not shape


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # shape inference failing only means nothing gets folded
        return {}
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            continue
        dims = t.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [int(d.dim_value) for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _is_int_like(a: np.ndarray) -> bool:
    return a.dtype.kind in "iub"


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray | None], opset: list[Any]) -> list[np.ndarray] | None:
    """Run one node with onnx's reference evaluator; None when it cannot."""
    from onnx.reference import ReferenceEvaluator

    names = [n if n else "" for n in node.input]
    feeds = {n: v for n, v in zip(names, values, strict=True) if n}
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in feeds]
    outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
    graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=opset)
    try:
        return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]
    except Exception:
        return None


def _shape_or_size(node: onnx.NodeProto, dims: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.asarray(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    rank = len(dims)
    start, end = int(attrs.get("start", 0)), int(attrs.get("end", rank))
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return np.asarray(dims[start:end], dtype=np.int64)


def _fold_or_keep(
    node: onnx.NodeProto,
    values: list[np.ndarray],
    graph_outputs: set[str],
    folded: dict[str, np.ndarray],
    keep: list[onnx.NodeProto],
) -> None:
    """Fold the node's outputs, except a node producing a graph output: TVM still has to compute that one."""
    names = [n for n in node.output if n]
    if graph_outputs & set(names):
        keep.append(node)
        return
    folded.update(zip(names, values, strict=True))


def fold_static_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with statically known shape computations replaced by initializers."""
    shapes = _static_shapes(model)
    known: dict[str, np.ndarray] = {}
    derived: set[str] = set()  # names whose value comes from a shape, or is a constant shape-like vector
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL):
            value = numpy_helper.to_array(init)
            if value.size <= _MAX_ELEMENTS:
                known[init.name] = value
                if value.ndim <= 1:  # a constant size/axes/flag: integer arithmetic on it is constant folding
                    derived.add(init.name)
    folded: dict[str, np.ndarray] = {}
    keep: list[onnx.NodeProto] = []
    opset = list(model.opset_import)
    graph_outputs = {o.name for o in model.graph.output}
    pending = list(model.graph.node)
    inlined: list[onnx.TensorProto] = []  # initializers of inlined If branches
    taken = graph_names(model.graph)
    while pending:
        node = pending.pop(0)
        values: list[np.ndarray] | None = None
        if node.domain not in ("", "ai.onnx"):
            keep.append(node)
            continue
        spliced = None
        if node.op_type == "If" and node.input[0] in known and known[node.input[0]].size == 1:
            # expanded function bodies (AffineGrid) choose their 2-D/3-D path with an If on a shape; TVM
            # imports both branches and fails on the one that does not apply
            spliced = branch_nodes(node, taken_branch(node, bool(known[node.input[0]].reshape(-1)[0])), taken)
        if spliced is not None:
            nodes, inits = spliced
            pending[:0] = nodes
            inlined += inits
            continue
        if node.op_type == "Constant":
            out = _evaluate(node, [], opset)
            if out is not None and _is_int_like(out[0]) and out[0].size <= _MAX_ELEMENTS:
                known[node.output[0]] = out[0]
                if out[0].ndim <= 1:
                    derived.add(node.output[0])
            keep.append(node)
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            known[node.output[0]] = value = _shape_or_size(node, shapes[node.input[0]])
            derived.add(node.output[0])
            _fold_or_keep(node, [value], graph_outputs, folded, keep)
            continue
        if (
            node.op_type in _FOLDABLE
            and all(not n or n in known for n in node.input)
            and any(n in derived for n in node.input)
        ):
            values = [known[n] if n else None for n in node.input]
        if values is None:
            keep.append(node)
            continue
        out = _evaluate(node, values, opset)
        if out is None or not all(_is_int_like(o) and o.size <= _MAX_ELEMENTS for o in out):
            keep.append(node)
            continue
        for name, value in zip([n for n in node.output if n], out, strict=True):
            known[name] = value
            derived.add(name)
        _fold_or_keep(node, out, graph_outputs, folded, keep)
    if not folded and len(keep) == len(model.graph.node) and not inlined:
        return model
    used = {n for node in keep for n in node.input} | {o.name for o in model.graph.output}
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(keep)
    result.graph.initializer.extend(inlined)
    for name, value in folded.items():
        if name in used:
            result.graph.initializer.append(numpy_helper.from_array(value, name))
    del result.graph.value_info[:]  # stale for folded names; TVM does not need them
    # Folded values can make more shapes static (a Pad whose pads were shape arithmetic): fold again until
    # nothing changes; every round removes nodes, so this ends.
    return fold_static_shapes(result)
