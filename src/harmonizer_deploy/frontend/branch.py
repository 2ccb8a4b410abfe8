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

from harmonizer_deploy.frontend.hook import subgraphs
from harmonizer_deploy.frontend.loop import _Constants, _unique


def taken_branch(node: onnx.NodeProto, cond: bool) -> onnx.GraphProto:
    """The branch an ONNX If takes when its condition is `cond`."""
    return next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))


def _nested_reads(graph: onnx.GraphProto) -> set[str]:
    """Names read inside the subgraphs of `graph`'s nodes, at any depth."""
    reads: set[str] = set()
    for node in graph.node:
        for sub in subgraphs(node):
            reads |= {n for inner in sub.node for n in inner.input if n} | _nested_reads(sub)
    return reads


def graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every value and node name of `graph`'s top level: what names spliced into it must not reuse."""
    taken = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    return taken | {o for n in graph.node for o in n.output} | {n.name for n in graph.node}


def branch_nodes(node: onnx.NodeProto, branch: onnx.GraphProto, taken: set[str],
                 ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """The branch's nodes and initializers renamed into the outer graph, writing the If's output names; None
    when a subgraph inside the branch reads a branch name that would have to be renamed (its reads are not
    rewritten), and `taken` is then left as it was."""
    rename: dict[str, str] = {}
    produced = {o for n in branch.node for o in n.output if o}
    outputs = {o.name: out for o, out in zip(branch.output, node.output, strict=True)}
    proposed = set(taken)
    for name in [i.name for i in branch.initializer] + sorted(produced - {i.name for i in branch.initializer}):
        # a branch output made by a branch node writes the If's output directly
        rename[name] = outputs[name] if name in outputs and name in produced else _unique(name, proposed)
    if any(rename.get(n, n) != n for n in _nested_reads(branch)):
        return None
    taken |= proposed
    inits = []
    for init in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename[init.name]
        inits.append(copy)
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
    taken = graph_names(graph)
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    inlined = 0
    pending = list(graph.node)
    while pending:
        node = pending.pop(0)
        is_if = node.op_type == "If" and node.domain in ("", "ai.onnx")
        cond = consts.get(node.input[0]) if is_if and node.input else None
        spliced = None
        if cond is not None and cond.size == 1:
            spliced = branch_nodes(node, taken_branch(node, bool(cond.reshape(-1)[0])), taken)
        if spliced is None:
            new_nodes.append(node)
            continue
        nodes, inits = spliced
        for spliced_node in nodes:  # an If nested in the branch is now top level: its condition may be known
            consts.add_node(spliced_node)
        for init in inits:
            consts.add_initializer(init)
        pending[:0] = nodes
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
