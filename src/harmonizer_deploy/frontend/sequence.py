"""ONNX sequences of static length rewritten so that TVM can import them: a pre-pass on the ONNX graph.

Why: TVM 0.27's Relax frontend holds a sequence as a relax Tuple and needs its length at import time. It has no
SequenceMap converter at all, reads SequenceInsert/SequenceAt positions only from 0-d constants, cannot iterate
a sequence that arrives through a Loop or an Identity, and a sequence-typed graph input becomes a plain tensor
Var it cannot take apart. Here every sequence whose elements are known by name before run time (built by
SequenceConstruct/SequenceEmpty, then SequenceInsert/SequenceErase at constant positions, Identity, or
SequenceMap) is tracked, and:

- each node producing one is rewritten as a SequenceConstruct of its elements (SequenceEmpty when it has none),
  which TVM imports as a Tuple;
- SequenceAt at a constant position becomes an Identity of that element, SequenceLength a constant (so a Loop
  over a sequence gets a static trip count and frontend/loop.py can unroll it);
- SequenceMap becomes its body, inlined once per element (frontend/loop.py's machinery).

Only names are moved around: every element is still computed by the graph at run time. A sequence whose length
is only known at run time is left as it is (TVM then refuses it).

`sequence_inputs_as_tensors` gives a sequence-typed graph input a fixed length, one tensor input per element
(the sequence counterpart of fixing a dynamic dim): the coverage harness uses it with the case's data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from harmonizer_deploy.frontend.loop import (
    _body_initializers,
    _Constants,
    _inline_body,
    _nested_loop,
    _NotStatic,
    _prune,
    _unique,
)

_DEFAULT = ("", "ai.onnx")


def sequence_inputs_as_tensors(model: onnx.ModelProto, values: list[Any]) -> tuple[onnx.ModelProto, list[Any]]:
    """Each sequence-typed graph input fed a list becomes one tensor input per element (shapes and types from
    the values) and a SequenceConstruct (SequenceEmpty for an empty list) rebuilding the sequence.

    Returns the new model and the flattened values; the model is returned unchanged when it has no such input."""
    if not any(_sequence_type(vi) is not None and isinstance(v, list)
               for vi, v in zip(model.graph.input, values, strict=False)):
        return model, values
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {vi.name for vi in model.graph.input} | {o for n in model.graph.node for o in n.output}
    inputs: list[onnx.ValueInfoProto] = []
    flat: list[Any] = []
    builders: list[onnx.NodeProto] = []
    for vi, value in zip(model.graph.input, values, strict=False):
        seq_type = _sequence_type(vi)
        if seq_type is None or not isinstance(value, list):
            inputs.append(vi)
            flat.append(value)
            continue
        elems = []
        for i, element in enumerate(value):
            arr = np.asarray(element)
            name = _unique(f"{vi.name}__{i}", taken)
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                        list(arr.shape)))
            flat.append(arr)
            elems.append(name)
        elem_type = seq_type.elem_type.tensor_type.elem_type or onnx.TensorProto.FLOAT
        builders.append(_construct(elems, vi.name, elem_type, _unique(f"{vi.name}__sequence", taken)))
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    nodes = [*builders, *out.graph.node]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, flat


def _sequence_type(vi: onnx.ValueInfoProto) -> Any:
    """The sequence type of a sequence input, or of an optional sequence input (fed a list: it holds one)."""
    if vi.type.HasField("sequence_type"):
        return vi.type.sequence_type
    if vi.type.HasField("optional_type") and vi.type.optional_type.elem_type.HasField("sequence_type"):
        return vi.type.optional_type.elem_type.sequence_type
    return None


def _construct(elems: list[str], out: str, elem_type: int, name: str) -> onnx.NodeProto:
    if elems:
        return helper.make_node("SequenceConstruct", elems, [out], name=name)
    return helper.make_node("SequenceEmpty", [], [out], name=name, dtype=elem_type)


class _Sequences:
    """The graph being rewritten: the sequences whose elements are known, and the new node list."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.consts = _Constants(graph, list(model.opset_import))
        self.taken = {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
        self.taken |= {o for n in graph.node for o in n.output} | {n.name for n in graph.node}
        self.known: dict[str, list[str]] = {}
        self.elem_type: dict[str, int] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rewritten = 0

    def position(self, node: onnx.NodeProto, index: int) -> int | None:
        """The constant position input `index` of `node`; None when absent, raises when not constant."""
        if len(node.input) <= index or not node.input[index]:
            return None
        value = self.consts.get(node.input[index])
        if value is None:
            raise _NotStatic(f"the position {node.input[index]!r} is computed at run time")
        return int(np.asarray(value).reshape(-1)[0])

    def produce(self, node: onnx.NodeProto, out: str, elems: list[str], elem_type: int) -> None:
        self.known[out] = elems
        self.elem_type[out] = elem_type
        built = _construct(elems, out, elem_type, _unique(f"{node.name or out}__static", self.taken))
        self.emit(built)

    def emit(self, node: onnx.NodeProto) -> None:
        self.nodes.append(node)
        self.consts.add_node(node)

    def rewrite(self, node: onnx.NodeProto) -> bool:
        """Handle one node; False when it is kept as it is."""
        op, ins = node.op_type, list(node.input)
        if node.domain not in _DEFAULT:
            return False
        if op == "SequenceConstruct":
            self.known[node.output[0]] = ins
            self.elem_type[node.output[0]] = onnx.TensorProto.UNDEFINED
            return False
        if op == "SequenceEmpty":
            self.known[node.output[0]] = []
            dtype = next((a.i for a in node.attribute if a.name == "dtype"), onnx.TensorProto.FLOAT)
            self.elem_type[node.output[0]] = dtype
            return False
        if not ins or ins[0] not in self.known:
            return False
        seq = self.known[ins[0]]
        elem_type = self.elem_type.get(ins[0], onnx.TensorProto.FLOAT)
        if op in ("Identity", "OptionalGetElement"):  # an optional known to hold this sequence
            self.produce(node, node.output[0], list(seq), elem_type)
        elif op == "OptionalHasElement":
            value = helper.make_tensor(node.output[0], onnx.TensorProto.BOOL, [], [True])
            self.emit(helper.make_node("Constant", [], [node.output[0]], name=node.name or node.output[0],
                                       value=value))
        elif op == "SequenceInsert":
            pos = self.position(node, 2)
            pos = len(seq) if pos is None else pos + len(seq) + 1 if pos < 0 else pos
            if not 0 <= pos <= len(seq):
                raise _NotStatic(f"SequenceInsert position {pos} is outside a sequence of {len(seq)}")
            self.produce(node, node.output[0], [*seq[:pos], ins[1], *seq[pos:]], elem_type)
        elif op == "SequenceErase":
            pos = self.position(node, 1)
            pos = len(seq) - 1 if pos is None else pos + len(seq) if pos < 0 else pos
            if not 0 <= pos < len(seq):
                raise _NotStatic(f"SequenceErase position {pos} is outside a sequence of {len(seq)}")
            self.produce(node, node.output[0], [*seq[:pos], *seq[pos + 1:]], elem_type)
        elif op == "SequenceAt":
            pos = self.position(node, 1)
            if pos is None or not -len(seq) <= pos < len(seq):
                raise _NotStatic(f"SequenceAt position {pos} is outside a sequence of {len(seq)}")
            self.emit(helper.make_node("Identity", [seq[pos]], [node.output[0]], name=node.name or node.output[0]))
        elif op == "SequenceLength":
            value = helper.make_tensor(node.output[0], onnx.TensorProto.INT64, [], [len(seq)])
            self.emit(helper.make_node("Constant", [], [node.output[0]], name=node.name or node.output[0],
                                       value=value))
        elif op == "SequenceMap":
            self.sequence_map(node)
        else:
            return False
        return True

    def sequence_map(self, node: onnx.NodeProto) -> None:
        """The body inlined once per element: sequence inputs give element t, tensor inputs are passed whole."""
        body = next(a.g for a in node.attribute if a.name == "body")
        if _nested_loop(body):
            raise _NotStatic("SequenceMap's body holds a Loop/Scan")
        length = len(self.known[node.input[0]])
        seqs = [name if name in self.known else None for name in node.input]
        if any(s is not None and len(self.known[s]) != length for s in seqs):
            raise _NotStatic("SequenceMap's input sequences differ in length")
        label = node.name or node.output[0]
        inits, renamed, local = _body_initializers(body, label, self.taken, self.consts)
        outs: list[list[str]] = [[] for _ in body.output]
        inlined: list[onnx.NodeProto] = []  # emitted only once every element is inlined
        for t in range(length):
            names = dict(renamed)
            for vi, name, s in zip(body.input, node.input, seqs, strict=False):
                names[vi.name] = self.known[s][t] if s is not None else name
            inlined += _inline_body(body, names, local, f"{label}__el{t}", self.taken, self.consts)
            for k, o in enumerate(body.output):
                outs[k].append(names.get(o.name, o.name))
        self.inits += inits
        for n in inlined:
            self.emit(n)
        for out, elems, o in zip(node.output, outs, body.output, strict=False):
            if out:
                self.produce(node, out, elems, o.type.tensor_type.elem_type or onnx.TensorProto.FLOAT)


def expand_static_sequences(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with its static-length sequence ops rewritten (see the module doc), and how many nodes
    were rewritten; the model itself (unchanged) when there is nothing to rewrite.

    Top-level graph only: Loop bodies are reached once frontend/loop.py has unrolled them."""
    ops = {"SequenceConstruct", "SequenceEmpty"}
    if not any(n.op_type in ops for n in model.graph.node):
        return model, 0
    state = _Sequences(model)
    for node in model.graph.node:
        try:
            rewritten = state.rewrite(node)
        except _NotStatic:  # this node stays for TVM, and what it produces is not known here
            for out in node.output:
                state.known.pop(out, None)
            rewritten = False
        if rewritten:
            state.rewritten += 1
        else:
            state.emit(node)
    if not state.rewritten:
        return model, 0
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(state.nodes)
    result.graph.initializer.extend(state.inits)
    _prune(result.graph)
    return result, state.rewritten
