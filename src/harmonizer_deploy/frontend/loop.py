"""ONNX `Loop` unrolled into plain nodes when its trip count and condition are known before run time.

Why: TVM 0.27's Relax ONNX frontend has no `Loop` converter, and tf2onnx writes one for every TF while loop it
cannot match to a fused op (Keras 3's Bidirectional GRU, hand-written recurrences). After shape folding (or
`compile --fix-dim time=N`) such a loop usually runs a fixed number of times: the trip count is a constant and
the condition is `counter < T`. Then the loop is the same as its body repeated, which TVM imports like any
graph. Every iteration's condition is evaluated here, so a loop that stops early is unrolled exactly as far as
it runs. A loop whose trip count or condition depends on run-time data is left as it is (TVM then refuses it
in one line naming the node, `compiler/relax_import.import_failure`), and so is one whose body holds another
subgraph or that would unroll past `MAX_NODES` nodes.

`Scan` (no TVM converter either) is unrolled the same way when its scan inputs have static lengths: iteration t
reads slice t of each scan input (a Gather), and the scan outputs are the iterations' outputs stacked, in the
directions and along the axes the node names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from harmonizer_deploy.frontend.hook import subgraphs

MAX_ITERATIONS = 4096  # a cond-driven loop must turn its condition off within this many iterations
MAX_NODES = 50_000  # unrolled nodes per loop: beyond this the graph would be larger than the model is worth
_MAX_CONST_ELEMENTS = 4096  # only small values are evaluated here: counters, conditions, shapes


@dataclass
class UnrollReport:
    """Which Loop/Scan nodes were unrolled (name → iterations) and which were left, with the reason."""

    unrolled: dict[str, int] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)


class _NotStatic(Exception):
    """The loop cannot be unrolled; the message says why."""


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _nested_loop(body: onnx.GraphProto) -> bool:
    """A body node other than If holds a subgraph (an If is inlined when its condition is static)."""
    return any(_has_subgraph(n) and not (n.op_type == "If" and n.domain in ("", "ai.onnx")) for n in body.node)


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
            self.add_initializer(init)
        for node in graph.node:
            self.add_node(node)

    def add_initializer(self, init: onnx.TensorProto) -> None:
        if np.prod(init.dims, dtype=np.int64) <= _MAX_CONST_ELEMENTS:
            self.values[init.name] = numpy_helper.to_array(init)

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
        if node.op_type == "OptionalHasElement" and node.input and self._present(node.input[0]):
            return np.array(True)
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

    def _present(self, name: str) -> bool:
        """`name` certainly holds a value: a non-optional op produced it (a tensor or a sequence)."""
        node = self.producer.get(name)
        return node is not None and node.op_type not in ("Optional", "If", "Loop", "Scan", "Identity") and (
            node.domain in ("", "ai.onnx"))

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


def _body_initializers(body: onnx.GraphProto, label: str, taken: set[str], consts: _Constants,
                       ) -> tuple[list[onnx.TensorProto], dict[str, str], set[str]]:
    """The body's initializers under fresh names (one copy: constant across iterations), the renaming, and the
    names the body computes itself (an iteration must not read them before computing them)."""
    inits: list[onnx.TensorProto] = []
    renamed: dict[str, str] = {}
    local = {i.name for i in body.input} | {o for n in body.node for o in n.output if o}
    for init in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = renamed[init.name] = _unique(f"{label}__{init.name}", taken)
        inits.append(copy)
        if np.prod(init.dims, dtype=np.int64) <= _MAX_CONST_ELEMENTS:
            consts.values[copy.name] = numpy_helper.to_array(init)
        local.discard(init.name)
    return inits, renamed, local


def _const(value: np.ndarray, base: str, inits: list[onnx.TensorProto], taken: set[str], consts: _Constants) -> str:
    """A new initializer holding `value`; its name."""
    name = _unique(base, taken)
    inits.append(numpy_helper.from_array(value, name))
    consts.values[name] = value
    return name


def _inline_body(body: onnx.GraphProto, names: dict[str, str], local: set[str], prefix: str, taken: set[str],
                 consts: _Constants) -> list[onnx.NodeProto]:
    """One iteration: copies of the body's nodes reading `names` (body name → outer name) for the body's inputs
    and initializers; `names` gains the outer names of everything the iteration computes."""
    nodes = []
    for node in body.node:
        if node.op_type == "If" and node.domain in ("", "ai.onnx"):
            nodes += _inline_if(node, names, local, prefix, taken, consts)
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = _unique(f"{prefix}__{node.name or node.op_type}", taken)
        for i, n in enumerate(copy.input):
            if n in names:
                copy.input[i] = names[n]
            elif n in local:
                raise _NotStatic(f"its body reads {n!r} before computing it")
        for i, n in enumerate(copy.output):
            if n:
                copy.output[i] = names[n] = _unique(f"{prefix}__{n}", taken)
        nodes.append(copy)
        consts.add_node(copy)
    return nodes


def _stack(parts: list[str], out: str, axis: int, label: str, inits: list[onnx.TensorProto], taken: set[str],
           consts: _Constants, opset: int) -> list[onnx.NodeProto]:
    """Nodes writing `out` = the tensors `parts` stacked along a new `axis` (Unsqueeze each, then Concat)."""
    nodes, stacked = [], []
    axes = _const(np.array([axis], np.int64), f"{label}__axis", inits, taken, consts) if opset >= 13 else ""
    for part in parts:
        name = _unique(f"{part}__stacked", taken)
        if opset >= 13:
            nodes.append(helper.make_node("Unsqueeze", [part, axes], [name], name=name))
        else:
            nodes.append(helper.make_node("Unsqueeze", [part], [name], name=name, axes=[axis]))
        stacked.append(name)
    nodes.append(helper.make_node("Concat", stacked, [out], name=_unique(f"{label}__stack", taken), axis=axis))
    return nodes


def _inline_if(node: onnx.NodeProto, names: dict[str, str], local: set[str], prefix: str, taken: set[str],
               consts: _Constants) -> list[onnx.NodeProto]:
    """An If inside a body whose condition is known here: the taken branch's nodes, its outputs as the If's."""
    cond = names.get(node.input[0], node.input[0])
    if node.input[0] in local and node.input[0] not in names:
        raise _NotStatic(f"its body reads {node.input[0]!r} before computing it")
    value = consts.get(cond)
    if value is None:
        raise _NotStatic(f"an If in its body has a condition {node.input[0]!r} computed at run time")
    branch = next(a.g for a in node.attribute if a.name == ("then_branch" if bool(np.asarray(value).reshape(-1)[0])
                                                           else "else_branch"))
    if _nested_loop(branch) or branch.initializer or branch.sparse_initializer:
        raise _NotStatic("an If branch in its body holds initializers or another Loop/Scan")
    inner = local | {o for n in branch.node for o in n.output if o}
    nodes = _inline_body(branch, names, inner, f"{prefix}__{node.name or 'if'}", taken, consts)
    for out, result in zip(node.output, branch.output, strict=False):
        if out:
            names[out] = names.get(result.name, result.name)
    return nodes


def _static_scalar(consts: _Constants, name: str, what: str) -> Any:
    """The scalar value of the optional Loop input `name` (None when the input is absent); _NotStatic when it is
    computed at run time."""
    if not name:
        return None
    value = consts.get(name)
    if value is None:
        raise _NotStatic(f"its {what} {name!r} is computed at run time")
    return np.asarray(value).reshape(-1)[0]


def _unroll(loop: onnx.NodeProto, consts: _Constants, taken: set[str], opset: int,
            ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], int]:
    """The nodes (and body initializers) replacing `loop`, and how many iterations they run."""
    body = next(a.g for a in loop.attribute if a.name == "body")
    if _nested_loop(body):
        raise _NotStatic("its body holds another subgraph (a nested Loop/Scan)")
    if body.sparse_initializer:
        raise _NotStatic("its body has sparse initializers")
    label = loop.name or loop.output[0]
    trip_name = loop.input[0] if len(loop.input) > 0 else ""
    cond_name = loop.input[1] if len(loop.input) > 1 else ""
    carried = list(loop.input[2:])
    n_carried, n_scan = len(carried), len(body.output) - 1 - len(carried)
    trip = _static_scalar(consts, trip_name, "trip count")
    trips = None if trip is None else int(trip)
    cond = _static_scalar(consts, cond_name, "condition")
    running = True if cond is None else bool(cond)
    if trips is None and not cond_name:
        raise _NotStatic("it has neither a trip count nor a condition (an infinite loop)")
    limit = min(trips if trips is not None else MAX_ITERATIONS + 1, MAX_ITERATIONS + 1)

    nodes: list[onnx.NodeProto] = []
    inits, renamed_inits, local = _body_initializers(body, label, taken, consts)

    def const(value: np.ndarray, what: str) -> str:
        return _const(value, f"{label}__{what}", inits, taken, consts)

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
        nodes += _inline_body(body, names, local, f"{label}__it{iteration}", taken, consts)
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
    for out, parts in zip(loop.output[n_carried:], scans, strict=False):
        if out:
            nodes += _stack(parts, out, 0, label, inits, taken, consts, opset)
    return nodes, inits, iteration


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Declared or inferred dims of the top-level tensors (None for a symbolic dim); best effort."""
    try:
        graph = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:  # inference cannot follow this model: only what it declares
        graph = model.graph
    shapes: dict[str, list[int | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


class _ScanBody:
    """A Scan body being unrolled: its initializers (copied once) and the names it computes."""

    def __init__(self, scan: onnx.NodeProto, consts: _Constants, taken: set[str]) -> None:
        self.graph = next(a.g for a in scan.attribute if a.name == "body")
        if _nested_loop(self.graph):
            raise _NotStatic("its body holds another subgraph (a nested Loop/Scan)")
        if self.graph.sparse_initializer:
            raise _NotStatic("its body has sparse initializers")
        self.label = scan.name or scan.output[0]
        self.consts, self.taken = consts, taken
        self.inits, self.renamed, self.local = _body_initializers(self.graph, self.label, taken, consts)
        self.nodes: list[onnx.NodeProto] = []

    def const(self, value: np.ndarray, what: str) -> str:
        return _const(value, f"{self.label}__{what}", self.inits, self.taken, self.consts)

    def take(self, x: str, index: int, axis: int) -> str:
        """x[index] along `axis` (the axis removed): a Gather with a scalar index."""
        out = _unique(f"{x}__at{index}", self.taken)
        idx = self.const(np.array(index, np.int64), f"index{index}")
        self.nodes.append(helper.make_node("Gather", [x, idx], [out], name=out, axis=axis))
        return out

    def steps(self, states: list[str], scans: list[tuple[str, int, bool]], length: int,
              prefix: str) -> tuple[list[str], list[list[str]]]:
        """`length` iterations: iteration t reads slice t (counted from the end when reversed) of each scan
        input (name, axis, reversed). Returns the final states and, per scan output, its parts in iteration
        order."""
        n_states = len(states)
        outs: list[list[str]] = [[] for _ in range(len(self.graph.output) - n_states)]
        for t in range(length):
            names = dict(self.renamed)
            for vi, value in zip(self.graph.input[:n_states], states, strict=True):
                names[vi.name] = value
            for vi, (x, axis, reverse) in zip(self.graph.input[n_states:], scans, strict=True):
                names[vi.name] = self.take(x, length - 1 - t if reverse else t, axis)
            self.nodes += _inline_body(self.graph, names, self.local, f"{prefix}__it{t}", self.taken, self.consts)
            if len(self.nodes) > MAX_NODES:
                raise _NotStatic(f"unrolled it would exceed {MAX_NODES} nodes")
            results = [names.get(o.name, o.name) for o in self.graph.output]
            states = results[:n_states]
            for k, part in enumerate(results[n_states:]):
                outs[k].append(part)
        return states, outs

    def emit(self, out: str, value: str) -> None:
        if out:
            name = _unique(f"{self.label}__out", self.taken)
            self.nodes.append(helper.make_node("Identity", [value], [out], name=name))

    def stack(self, parts: list[str], out: str, axis: int, opset: int) -> None:
        if out:
            self.nodes += _stack(parts, out, axis, self.label, self.inits, self.taken, self.consts, opset)


def _scan_length(names: list[str], axes: list[int], shapes: dict[str, list[int | None]]) -> int:
    """The number of iterations: the (static, common) length of the scan inputs along their scan axes."""
    lengths = set()
    for name, axis in zip(names, axes, strict=True):
        dims = shapes.get(name)
        if dims is None or not -len(dims) <= axis < len(dims) or dims[axis] is None:
            raise _NotStatic(f"the length of its scan input {name!r} is not known before run time")
        lengths.add(int(dims[axis]))
    if len(lengths) != 1:
        raise _NotStatic(f"its scan inputs differ in length ({sorted(lengths)})")
    length = lengths.pop()
    if length > MAX_ITERATIONS:
        raise _NotStatic(f"it runs more than {MAX_ITERATIONS} iterations")
    return length


def _unroll_scan(scan: onnx.NodeProto, consts: _Constants, shapes: dict[str, list[int | None]], taken: set[str],
                 opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], int]:
    """The nodes (and initializers) replacing a Scan whose scan inputs have static lengths; its iteration count.

    Scan-9 and later: scan axes and directions per input and output. Scan-8: every state and scan input has a
    leading batch axis (the body sees one batch entry), scan inputs scan their axis 1, and the optional
    sequence_lens must be constant and equal to the full length."""
    attrs = {a.name: helper.get_attribute_value(a) for a in scan.attribute}
    body = _ScanBody(scan, consts, taken)
    m = int(attrs["num_scan_inputs"])
    n_out = len(body.graph.output)
    if opset < 9:
        lens_name, ins = (scan.input[0] if scan.input else ""), list(scan.input[1:])
        n = len(ins) - m
        dirs = list(attrs.get("directions", [0] * m))
        length = _scan_length(ins[n:], [1] * m, shapes)
        batches = _scan_length(ins, [0] * len(ins), shapes)
        if lens_name:
            lens = consts.get(lens_name)
            if lens is None or np.any(np.asarray(lens) != length):
                raise _NotStatic("its sequence_lens is not a constant equal to the full scan length")
        finals: list[list[str]] = [[] for _ in range(n)]
        scanned: list[list[str]] = [[] for _ in range(n_out - n)]
        for b in range(batches):
            states = [body.take(x, b, 0) for x in ins[:n]]
            scans = [(body.take(x, b, 0), 0, bool(d)) for x, d in zip(ins[n:], dirs, strict=True)]
            states, outs = body.steps(states, scans, length, f"{body.label}__b{b}")
            for k, value in enumerate(states):
                finals[k].append(value)
            for k, parts in enumerate(outs):
                part = _unique(f"{body.label}__b{b}__scan{k}", taken)
                body.stack(parts, part, 0, opset)
                scanned[k].append(part)
        for out, parts in zip(scan.output, [*finals, *scanned], strict=False):
            body.stack(parts, out, 0, opset)
        return body.nodes, body.inits, length
    n = len(scan.input) - m
    in_axes = list(attrs.get("scan_input_axes", [0] * m))
    in_dirs = list(attrs.get("scan_input_directions", [0] * m))
    out_axes = list(attrs.get("scan_output_axes", [0] * (n_out - n)))
    out_dirs = list(attrs.get("scan_output_directions", [0] * (n_out - n)))
    length = _scan_length(list(scan.input[n:]), in_axes, shapes)
    if length == 0 and n_out > n:
        raise _NotStatic("it runs zero iterations and has scan outputs")
    scans = [(x, axis, bool(d)) for x, axis, d in zip(scan.input[n:], in_axes, in_dirs, strict=True)]
    states, outs = body.steps(list(scan.input[:n]), scans, length, body.label)
    for out, value in zip(scan.output[:n], states, strict=False):
        body.emit(out, value)
    for out, parts, axis, d in zip(scan.output[n:], outs, out_axes, out_dirs, strict=False):
        body.stack(parts[::-1] if d else parts, out, axis, opset)
    return body.nodes, body.inits, length


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers whose outputs nothing reads (subgraph reads of outer names count)."""

    def reads(g: onnx.GraphProto) -> set[str]:
        names = {o.name for o in g.output}
        for node in g.node:
            names.update(n for n in node.input if n)
            for sub in subgraphs(node):
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
    """A copy of `model` with every top-level Loop and Scan whose iterations are known here unrolled (see the
    module doc).

    The model is returned unchanged (the same object) when it has no Loop or Scan that can be unrolled."""
    report = UnrollReport()
    loops = [n for n in model.graph.node if n.op_type in ("Loop", "Scan") and n.domain in ("", "ai.onnx")]
    if not loops:
        return model, report
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = model.graph
    consts = _Constants(graph, list(model.opset_import))
    shapes = _static_shapes(model) if any(n.op_type == "Scan" for n in loops) else {}
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
            if node.op_type == "Scan":
                nodes, inits, iterations = _unroll_scan(node, consts, shapes, taken, opset)
            else:
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
