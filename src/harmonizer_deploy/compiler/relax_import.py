"""ONNX → Relax as compile, tune and debug all do it: identifier weight names, custom ops, folded shapes,
weights detached as parameters (they ship separately, as params.npz)."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError


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



def _dynamic_dims(onnx_model: Any) -> list[str]:
    """Names of the dynamic dims of the graph inputs (what `--fix-dim` can fix), in order of appearance."""
    initializers = {t.name for t in onnx_model.graph.initializer}
    names: list[str] = []
    for value in onnx_model.graph.input:
        if value.name not in initializers:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param and dim.dim_param not in names:
                    names.append(dim.dim_param)
    return names


def import_failure(exc: Exception, onnx_model: Any, fix_dims: dict[str, int] | None, printed: str = "",
                   loops_left: dict[str, str] | None = None) -> HarmonizerError:
    """One line for a model TVM's ONNX frontend cannot take: the node it stopped at and what fixes it."""
    text = str(exc).strip()
    failing_op = re.search(r"Error converting operator (\w+)", printed)
    first = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), type(exc).__name__)[:200]
    constants = {t.name for t in onnx_model.graph.initializer}
    constants |= {o for n in onnx_model.graph.node if n.op_type == "Constant" for o in n.output}
    node = None
    unsupported = re.search(r"not supported for frontend ONNX: ([\w, ]+)", text)
    if unsupported:
        ops = {op.strip() for op in unsupported.group(1).split(",")}
        node = next((n for n in onnx_model.graph.node if n.op_type in ops), None)
        first = f"TVM's ONNX frontend has no converter for {', '.join(sorted(ops))}"
        why = (loops_left or {}).get(node.name or node.output[0]) if node is not None else None
        if why:  # frontend/loop.py unrolls a Loop/Scan whose iterations are known before run time; not this one's
            first = f"TVM has no {node.op_type} converter and this {node.op_type} cannot be unrolled: {why}"
    elif "Reshape" in text:
        node = next((n for n in onnx_model.graph.node if n.op_type == "Reshape" and n.input[1] not in constants),
                    None)
        first = "its target shape is computed at run time from a dynamic dim, and TVM's Reshape needs it static"
    if node is None and failing_op:
        node = next((n for n in onnx_model.graph.node if n.op_type == failing_op.group(1)), None)
    where = f"node {node.name or '?'} ({node.op_type})" if node is not None else "the model"
    dynamic = [d for d in _dynamic_dims(onnx_model) if d not in (fix_dims or {})]
    fixes = []
    if dynamic:
        fixes.append("fix the dynamic dims so shape computations fold to constants: "
                     + " ".join(f"--fix-dim {d}=N" for d in dynamic))
    op = node.op_type if node is not None else "the op"
    fixes.append(f"{'or ' if fixes else ''}give {op} a TVM converter through a custom-op registry strategy "
                 "(docs/custom-ops.md)")
    return HarmonizerError(f"TVM cannot import {where}: {first}", "; ".join(fixes))


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
    # prepare_for_tvm's folding makes new weights named after the nodes they came from: rename those too
    onnx_model = with_identifier_weight_names(onnx_model)
    printed = io.StringIO()  # TVM's frontend prints "Error converting operator X, with inputs: …" to stdout
    try:
        with contextlib.redirect_stdout(printed):
            mod = import_relax(onnx_model, default_registry().tvm_converters(), keep_params_in_input=True)
    except HarmonizerError:
        raise
    except Exception as exc:  # TVM's frontend raises TypeError, OpNotImplemented, TVMError… without a node name
        raise import_failure(exc, onnx_model, fix_dims, printed.getvalue(), report.loops_left) from exc
    finally:
        noise = [ln for ln in printed.getvalue().splitlines() if not ln.startswith("Error converting operator")]
        if noise:  # whatever else TVM printed goes on, to stderr: stdout is for our own results
            sys.stderr.write("\n".join(noise) + "\n")
    mod, params = relax.frontend.detach_params(mod)
    arrays = [p.numpy() for p in params.get("main", [])]
    names = [str(v.name) for v in mod["main"].params[-len(arrays):]] if arrays else []
    return mod, names, arrays, report
