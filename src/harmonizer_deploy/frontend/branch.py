"""ONNX `If` whose condition is known before run time replaced by the branch it takes.

Why: TVM 0.27 imports both branches of every If and builds a relax.If; a branch it cannot type (an empty
Optional: `_EmptyOptional has no attribute ty`) fails the whole import even when the condition is a constant
and that branch never runs. Exporters write such constant conditions for static flags (training mode, a fixed
option). The condition is evaluated with onnx.reference only when it is computed from initializers and
constants (`loop._Constants`); the chosen branch's nodes are then spliced into the graph, its local names made
unique, so whatever the branch computes on run-time data is still computed by TVM.
"""

from __future__ import annotations

import onnx
from onnx import helper

from harmonizer_deploy.frontend.loop import _Constants, _has_subgraph, _unique


def _branch_nodes(node: onnx.NodeProto, branch: onnx.GraphProto, taken: set[str],
                  ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The branch's nodes and initializers renamed into the outer graph, writing the If's output names."""
    rename: dict[str, str] = {}
    inits = []
    for init in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename[init.name] = _unique(init.name, taken)
        inits.append(copy)
    produced = {o for n in branch.node for o in n.output if o}
    outputs = {o.name: out for o, out in zip(branch.output, node.output, strict=True)}
    for name in sorted(produced):  # a branch output made by a branch node writes the If's output directly
        rename[name] = outputs[name] if name in outputs else _unique(name, taken)
    nodes = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        del copy.input[:]
        copy.input.extend(rename.get(n, n) if n else n for n in inner.input)
        del copy.output[:]
        copy.output.extend(rename.get(n, n) if n else n for n in inner.output)
        copy.name = _unique(f"{node.name or node.output[0]}/{inner.name or inner.op_type}", taken)
        nodes.append(copy)
    for out_info, out in zip(branch.output, node.output, strict=True):
        source = rename.get(out_info.name, out_info.name)
        if source != out:  # an outer value or initializer passed through, or a repeated output
            nodes.append(helper.make_node("Identity", [source], [out], name=_unique(f"{out}/identity", taken)))
    return nodes, inits


def inline_constant_ifs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every top-level If whose condition is known here replaced by its taken branch.

    The same object comes back when there is no such If."""
    graph = model.graph
    if not any(n.op_type == "If" and n.domain in ("", "ai.onnx") for n in graph.node):
        return model
    consts = _Constants(graph, list(model.opset_import))
    taken = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    taken |= {o for n in graph.node for o in n.output} | {n.name for n in graph.node}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    inlined = 0
    for node in graph.node:
        is_if = node.op_type == "If" and node.domain in ("", "ai.onnx")
        cond = consts.get(node.input[0]) if is_if and node.input else None
        branch = None
        if cond is not None and cond.size == 1:
            name = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
            branch = next(a.g for a in node.attribute if a.name == name)
        if branch is None or any(_has_subgraph(n) for n in branch.node):  # nested reads are not renamed here
            new_nodes.append(node)
            continue
        nodes, inits = _branch_nodes(node, branch, taken)
        new_nodes += nodes
        new_inits += inits
        inlined += 1
    if not inlined:
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(new_nodes)
    result.graph.initializer.extend(new_inits)
    return result
