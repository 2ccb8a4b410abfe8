"""ONNX `Loop` unrolled into plain nodes when its trip count and condition are known before run time.

Why: TVM 0.27's Relax ONNX frontend has no `Loop` converter, and tf2onnx writes one for every TF while loop it
cannot match to a fused op (Keras 3's Bidirectional GRU, hand-written recurrences). After shape folding (or
`compile --fix-dim time=N`) such a loop usually runs a fixed number of times: the trip count is a constant and
the condition is `counter < T`. Then the loop is the same as its body repeated, which TVM imports like any
graph. Every iteration's condition is evaluated here, so a loop that stops early is unrolled exactly as far as
it runs. A loop whose trip count or condition depends on run-time data is left as it is (TVM then refuses it
in one line naming the node, `compiler/relax_import.import_failure`), and so is one whose body holds another
subgraph or that would unroll past `MAX_NODES` nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_ITERATIONS = 4096  # a cond-driven loop must turn its condition off within this many iterations
MAX_NODES = 50_000  # unrolled nodes per loop: beyond this the graph would be larger than the model is worth
_MAX_CONST_ELEMENTS = 4096  # only small values are evaluated here: counters, conditions, shapes


@dataclass
class UnrollReport:
    """Which Loop nodes were unrolled (name → iterations) and which were left, with the reason."""

    unrolled: dict[str, int] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)


class _NotStatic(Exception):
    """The loop cannot be unrolled; the message says why."""


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


class _Constants:
    """Values of small tensors known before run time, evaluated on demand with onnx.reference.

    Only to decide how many iterations run (trip count, conditions): the values are never written into the
    graph, so whatever the unrolled body computes is still computed by TVM."""

    def __init__(self, graph: onnx.GraphProto, opset: list[Any]) -> None:
        self.opset = opset
        self.values: dict[str, np.ndarray] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.failed: set[str] = set()
        for init in graph.initializer:
            if np.prod(init.dims, dtype=np.int64) <= _MAX_CONST_ELEMENTS:
                self.values[init.name] = numpy_helper.to_array(init)
        for node in graph.node:
            self.add_node(node)

    def add_node(self, node: onnx.NodeProto) -> None:
        for out in node.output:
            if out:
                self.producer[out] = node

    def get(self, name: str) -> np.ndarray | None:
        """The value of `name`, or None when it depends on a graph input or on data this does not evaluate."""
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        if node is None or name in self.failed or _has_subgraph(node) or node.domain not in ("", "ai.onnx"):
            return None
        inputs = [self.get(n) if n else None for n in node.input]
        if any(v is None for n, v in zip(node.input, inputs, strict=True) if n):
            self.failed.add(name)
            return None
        out = self._evaluate(node, inputs)
        if out is None or not all(o.size <= _MAX_CONST_ELEMENTS for o in out):
            self.failed.update(n for n in node.output if n)
            return None
        self.values.update((n, v) for n, v in zip(node.output, out, strict=False) if n)
        return self.values.get(name)

    def _evaluate(self, node: onnx.NodeProto, values: list[np.ndarray | None]) -> list[np.ndarray] | None:
        from onnx.reference import ReferenceEvaluator

        feeds = {n: v for n, v in zip(node.input, values, strict=True) if n}
        ins = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in feeds]
        outs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
        model = helper.make_model(helper.make_graph([node], "const", ins, outs), opset_imports=self.opset)
        try:
            return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]
        except Exception:  # an op the reference evaluator cannot run: the value is just not known here
            return None


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _unroll(loop: onnx.NodeProto, consts: _Constants, taken: set[str], opset: int,
            ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], int]:
    """The nodes (and body initializers) replacing `loop`, and how many iterations they run."""
    body = next(a.g for a in loop.attribute if a.name == "body")
    if any(_has_subgraph(n) for n in body.node):
        raise _NotStatic("its body holds another subgraph (nested If/Loop/Scan)")
    if body.sparse_initializer:
        raise _NotStatic("its body has sparse initializers")
    label = loop.name or loop.output[0]
    trip_name = loop.input[0] if len(loop.input) > 0 else ""
    cond_name = loop.input[1] if len(loop.input) > 1 else ""
    carried = list(loop.input[2:])
    n_carried, n_scan = len(carried), len(body.output) - 1 - len(carried)
    if trip_name:
        trip = consts.get(trip_name)
        if trip is None:
            raise _NotStatic(f"its trip count {trip_name!r} is computed at run time")
        trips = int(np.asarray(trip).reshape(-1)[0])
    else:
        trips = None
    if cond_name:
        cond = consts.get(cond_name)
        if cond is None:
            raise _NotStatic(f"its condition {cond_name!r} is computed at run time")
        running = bool(np.asarray(cond).reshape(-1)[0])
    else:
        running = True
    if trips is None and not cond_name:
        raise _NotStatic("it has neither a trip count nor a condition (an infinite loop)")
    limit = min(trips if trips is not None else MAX_ITERATIONS + 1, MAX_ITERATIONS + 1)

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    local = {i.name for i in body.input} | {o for n in body.node for o in n.output if o}
    renamed_inits: dict[str, str] = {}
    for init in body.initializer:  # constant across iterations: one copy, under a fresh name
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = renamed_inits[init.name] = _unique(f"{label}__{init.name}", taken)
        inits.append(copy)
        if np.prod(init.dims, dtype=np.int64) <= _MAX_CONST_ELEMENTS:
            consts.values[copy.name] = numpy_helper.to_array(init)
        local.discard(init.name)

    def const(value: np.ndarray, what: str) -> str:
        name = _unique(f"{label}__{what}", taken)
        tensor = numpy_helper.from_array(value, name)
        inits.append(tensor)
        consts.values[name] = value
        return name

    true_name = ""
    state = carried
    scans: list[list[str]] = [[] for _ in range(n_scan)]
    iteration = 0
    while running and iteration < limit:
        if iteration == MAX_ITERATIONS:
            raise _NotStatic(f"it runs more than {MAX_ITERATIONS} iterations")
        if not cond_name and not true_name:  # no condition input: the body sees `true`
            true_name = const(np.array(True), "true")
        names = dict(renamed_inits)
        names[body.input[0].name] = const(np.array(iteration, np.int64), f"iter{iteration}")
        names[body.input[1].name] = cond_name or true_name
        for vi, value in zip(body.input[2:], state, strict=True):
            names[vi.name] = value
        for node in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = _unique(f"{label}__it{iteration}__{node.name or node.op_type}", taken)
            for i, n in enumerate(copy.input):
                if n in names:
                    copy.input[i] = names[n]
                elif n in local:
                    raise _NotStatic(f"its body reads {n!r} before computing it")
            for i, n in enumerate(copy.output):
                if n:
                    copy.output[i] = names[n] = _unique(f"{label}__it{iteration}__{n}", taken)
            nodes.append(copy)
            consts.add_node(copy)
        if len(nodes) > MAX_NODES:
            raise _NotStatic(f"unrolled it would exceed {MAX_NODES} nodes")
        outs = [names.get(o.name, o.name) for o in body.output]
        cond_name = outs[0]
        state = outs[1:1 + n_carried]
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        iteration += 1
        if iteration < limit:
            cond = consts.get(cond_name)
            if cond is None:
                raise _NotStatic("its condition depends on values computed at run time")
            running = bool(np.asarray(cond).reshape(-1)[0])

    if n_scan and iteration == 0:
        raise _NotStatic("it runs zero iterations and has scan outputs (their shape is unknown here)")
    for out, value in zip(loop.output[:n_carried], state, strict=False):
        if out:
            nodes.append(helper.make_node("Identity", [value], [out], name=_unique(f"{label}__final", taken)))
    axes = const(np.array([0], np.int64), "axis0") if n_scan and opset >= 13 else ""
    for out, parts in zip(loop.output[n_carried:], scans, strict=False):
        if not out:
            continue
        stacked = []
        for part in parts:
            name = _unique(f"{part}__stacked", taken)
            if opset >= 13:
                nodes.append(helper.make_node("Unsqueeze", [part, axes], [name], name=name))
            else:
                nodes.append(helper.make_node("Unsqueeze", [part], [name], name=name, axes=[0]))
            stacked.append(name)
        nodes.append(helper.make_node("Concat", stacked, [out], name=_unique(f"{label}__scan", taken), axis=0))
    return nodes, inits, iteration


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers whose outputs nothing reads (subgraph reads of outer names count)."""

    def reads(g: onnx.GraphProto) -> set[str]:
        names = {o.name for o in g.output}
        for node in g.node:
            names.update(n for n in node.input if n)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    names |= reads(sub)
        return names

    while True:
        used = reads(graph)
        kept = [n for n in graph.node if any(o in used for o in n.output if o) or not any(n.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    inits = [t for t in graph.initializer if t.name in used or t.name in {i.name for i in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def unroll_loops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, UnrollReport]:
    """A copy of `model` with every top-level Loop whose iterations are known here unrolled (see the module doc).

    The model is returned unchanged (the same object) when it has no Loop that can be unrolled."""
    report = UnrollReport()
    loops = [n for n in model.graph.node if n.op_type == "Loop" and n.domain in ("", "ai.onnx")]
    if not loops:
        return model, report
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = model.graph
    consts = _Constants(graph, list(model.opset_import))
    taken = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    taken |= {o for n in graph.node for o in n.output} | {n.name for n in graph.node}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    loop_ids = {id(n) for n in loops}
    for node in graph.node:
        if id(node) not in loop_ids:
            new_nodes.append(node)
            continue
        label = node.name or node.output[0]
        try:
            nodes, inits, iterations = _unroll(node, consts, taken, opset)
        except _NotStatic as why:
            report.left[label] = str(why)
            new_nodes.append(node)
            continue
        new_nodes += nodes
        new_inits += inits
        report.unrolled[label] = iterations
    if not report.unrolled:
        return model, report
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(new_nodes)
    present = {t.name for t in result.graph.initializer}
    result.graph.initializer.extend(t for t in new_inits if t.name not in present)
    unrolled_outputs = {o for n in loops if (n.name or n.output[0]) in report.unrolled for o in n.output}
    kept_info = [v for v in result.graph.value_info if v.name not in unrolled_outputs]
    del result.graph.value_info[:]
    result.graph.value_info.extend(kept_info)
    _prune(result.graph)
    return result, report
