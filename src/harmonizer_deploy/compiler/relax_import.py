"""ONNX → Relax as compile, tune and debug all do it: identifier weight names, custom ops, folded shapes,
weights detached as parameters (they ship separately, as params.npz)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def with_identifier_weight_names(onnx_model: Any) -> Any:
    """A copy of the model whose weight names are plain identifiers (`conv0_1/convolution:0` → `conv0_1_convolution_0`).

    Why: the weight names become kernel parameter names, and TVM's WebGPU code generator writes them into WGSL
    unchanged, where `/` and `:` are syntax errors. Harmless for the other targets.
    """
    model = type(onnx_model)()
    model.CopyFrom(onnx_model)
    graph = model.graph
    taken = ({v.name for v in graph.input} | {v.name for v in graph.output} | {o for n in graph.node for o in n.output}
             | {i.name for i in graph.initializer})
    renamed: dict[str, str] = {}
    for init in graph.initializer:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", init.name):
            continue
        base = re.sub(r"\W", "_", init.name).lstrip("_0123456789") or "weight"
        new, i = base, 1
        while new in taken or new in renamed.values():
            new, i = f"{base}_{i}", i + 1
        renamed[init.name] = new
        init.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in graph.input:
        if value.name in renamed:
            value.name = renamed[value.name]
    return model



def import_onnx(
    onnx_model: Any, fix_dims: dict[str, int] | None = None
) -> tuple[Any, list[str], list[np.ndarray], Any]:
    """Relax import with weights split out as parameters (they ship separately, as params.npz).

    Before import: decomposed custom ops are inlined, named input dims optionally fixed (`fix_dims`), and shape
    computations folded (the returned report says what). Custom-domain nodes go to the registry's Relax
    converters through the domain-aware hook: a node without one fails instead of being taken for a built-in.
    """
    from tvm import relax

    from harmonizer_deploy.custom_ops import default_registry
    from harmonizer_deploy.custom_ops.tvm_prepare import import_relax, prepare_for_tvm

    onnx_model, report = prepare_for_tvm(with_identifier_weight_names(onnx_model), fix_dims=fix_dims)
    mod = import_relax(onnx_model, default_registry().tvm_converters(), keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    arrays = [p.numpy() for p in params.get("main", [])]
    names = [str(v.name) for v in mod["main"].params[-len(arrays):]] if arrays else []
    return mod, names, arrays, report
