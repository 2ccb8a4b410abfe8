"""tf2onnx side of the custom-op and decompose strategies: emit one node per custom op, in a custom domain.

- TF ops (e.g. CumulativeLogsumexp): a tf2onnx op handler replaces the TF node.
- Keras layers: a tf2onnx graph rewriter (run before op handlers, like tf2onnx's own LSTM/GRU rewriters)
  collapses every TF op under the layer's name scope into one node; its weights come from the Keras layer.
Then the model gets the ONNX functions that implement those nodes for onnxruntime.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.custom_ops.registry import DECOMPOSED_DOMAIN, DOMAIN, CustomOp

DOMAIN_FOR = {"custom-op": DOMAIN, "decompose": DECOMPOSED_DOMAIN}


@dataclass
class Tf2OnnxExtensions:
    """Keyword arguments for tf2onnx.convert.from_function, plus what was emitted."""

    custom_op_handlers: dict[str, tuple[Callable, list]] = field(default_factory=dict)
    custom_rewriter: list[Callable] = field(default_factory=list)
    emitted: dict[tuple[str, str], CustomOp] = field(default_factory=dict)  # (domain, op_type) → entry

    def kwargs(self) -> dict[str, Any]:
        from onnx import helper

        if not self.custom_op_handlers and not self.custom_rewriter:
            return {}
        return {"custom_op_handlers": self.custom_op_handlers or None,
                "custom_rewriter": self.custom_rewriter or None,
                "extra_opset": [helper.make_opsetid(d, 1) for d in DOMAIN_FOR.values()]}


def scope_pattern(layer_name: str) -> re.Pattern[str]:
    """TF names a Keras layer's ops `…/<name>/…` or `…/<name>_<k>/…` (uniquified on re-entry)."""
    return re.compile(rf"(^|/){re.escape(layer_name)}(_\d+)?/")


def add_tf_op(ext: Tf2OnnxExtensions, entry: CustomOp, strategy: str) -> None:
    domain = DOMAIN_FOR[strategy]

    def handler(ctx: Any, node: Any, name: str, args: list) -> None:
        attrs = entry.tf_attributes(ctx, node)
        outputs, inputs = list(node.output), [node.input[0]]
        shapes = [ctx.get_shape(o) for o in outputs]
        dtypes = [ctx.get_dtype(o) for o in outputs]
        ctx.remove_node(node.name)
        ctx.make_node(entry.op_type, inputs, attr=attrs, outputs=outputs, shapes=shapes, dtypes=dtypes,
                      domain=domain, name=name)

    ext.custom_op_handlers[entry.tf_op] = (handler, [])
    ext.emitted[(domain, entry.op_type)] = entry


def add_layer(ext: Tf2OnnxExtensions, entry: CustomOp, strategy: str, layer: Any) -> None:
    domain = DOMAIN_FOR[strategy]
    consts, attrs = entry.layer_inputs(layer)
    pattern = scope_pattern(layer.name)

    def rewriter(g: Any, ops: list[Any]) -> list[Any]:
        if getattr(g, "_is_subgraph", False):  # loop bodies/functions of the layer go away with the collapse
            return ops
        collapse_scope(g, pattern, layer.name, entry.op_type, domain, consts, attrs)
        return g.get_nodes()

    ext.custom_rewriter.append(rewriter)
    ext.emitted[(domain, entry.op_type)] = entry


def collapse_scope(g: Any, pattern: re.Pattern[str], layer_name: str, op_type: str, domain: str,
                   consts: list[np.ndarray], attrs: dict[str, Any]) -> None:
    """Replace the TF ops under one layer scope (one activation in, one out) by a single custom node."""
    from tf2onnx import utils

    inside = [n for n in g.get_nodes() if pattern.search(n.name)]
    if not inside:
        raise HarmonizerError(f"layer {layer_name!r}: no TF ops under its name scope",
                              "rename the layer so its name is unique, or use --custom-op-strategy rewrite")
    produced = {o for n in inside for o in n.output}
    activations: list[str] = []
    for n in inside:
        for tensor in n.input:
            producer = g.get_node_by_output(tensor)
            if tensor not in produced and tensor not in activations and not (producer and producer.is_const()):
                activations.append(tensor)
    names = {n.name for n in inside}
    used_outside = [o for o in sorted(produced)
                    if o in g.outputs or any(c.name not in names for c in g.find_output_consumers(o))]
    if len(activations) != 1 or len(used_outside) != 1:
        raise HarmonizerError(
            f"layer {layer_name!r}: expected one input and one output tensor, found {len(activations)} and "
            f"{len(used_outside)}", "use --custom-op-strategy rewrite for this model",
        )
    (out,) = used_outside
    shape, dtype = g.get_shape(out), g.get_dtype(out)
    for n in inside:
        g.remove_node(n.name)
    weight_names = [g.make_const(utils.make_name(f"{layer_name}/w"), w).output[0] for w in consts]
    g.make_node(op_type, [activations[0], *weight_names], attr=attrs, outputs=[out], shapes=[shape],
                dtypes=[dtype], domain=domain, name=utils.make_name(f"{layer_name}/{op_type}"))


def attach_functions(model: Any, emitted: dict[tuple[str, str], CustomOp], opset: int) -> list[str]:
    """Add the ONNX function implementing each emitted custom node (onnxruntime runs these)."""
    from onnx import helper

    used = {(n.domain, n.op_type) for n in model.graph.node}
    names = []
    for (domain, op_type), entry in sorted(emitted.items()):
        if (domain, op_type) not in used:
            raise HarmonizerError(f"{domain}::{op_type} was planned but tf2onnx emitted no such node",
                                  "check the layer with `harmonizer-deploy ops scan`")
        model.functions.append(entry.onnx_function(domain, opset))
        names.append(f"{domain}::{op_type}")
    domains = {d for d, _ in emitted}
    kept = [o for o in model.opset_import if o.domain not in domains]
    del model.opset_import[:]
    model.opset_import.extend(kept + [helper.make_opsetid(d, 1) for d in sorted(domains)])
    return names
