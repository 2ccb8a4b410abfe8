"""Get an ONNX model ready for TVM's importer: inline decomposed custom ops, fold shape computations.

TVM 0.27 ignores model-local functions and rejects many run-time shape chains (Shape → Gather → Concat →
Reshape, as tf2onnx writes for Keras matmuls and einsums); onnxslim's shape inference and constant folding
removes the ones that are constant once the declared input dims are known.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harmonizer_deploy.custom_ops.registry import DECOMPOSED_DOMAIN


@dataclass
class PrepareReport:
    inlined: list[str] = field(default_factory=list)  # domain::op of the functions inlined
    ops_before: dict[str, int] = field(default_factory=dict)  # after inlining, before folding
    fixed_dims: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    explicit_padding: int = 0  # Conv nodes whose auto_pad SAME_* became explicit pads
    unrolled_loops: dict[str, int] = field(default_factory=dict)  # Loop node → iterations (frontend/loop.py)
    loops_left: dict[str, str] = field(default_factory=dict)  # Loop node → why it could not be unrolled

    @property
    def folded(self) -> dict[str, int]:
        """Nodes removed per op type by folding (shape ops mostly)."""
        return {k: v - self.ops_after.get(k, 0) for k, v in self.ops_before.items() if v > self.ops_after.get(k, 0)}

    def to_dict(self) -> dict:
        return {"inlined": self.inlined, "folded": self.folded, "fixed_dims": self.fixed_dims,
                "explicit_padding": self.explicit_padding, "unrolled_loops": self.unrolled_loops,
                "nodes_before": sum(self.ops_before.values()),
                "nodes_after": sum(self.ops_after.values())}


def _op_counts(model: Any) -> dict[str, int]:
    return dict(Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in model.graph.node))


def inline_decomposed(model: Any) -> tuple[Any, list[str]]:
    import onnx.inliner

    ids = [(f.domain, f.name) for f in model.functions if f.domain == DECOMPOSED_DOMAIN]
    if not ids:
        return model, []
    return onnx.inliner.inline_selected_functions(model, ids, exclude=False), [f"{d}::{n}" for d, n in ids]


def fold_shapes(model: Any) -> Any:
    """onnxslim constant folding + shape inference; custom-domain nodes are left as they are."""
    import onnxslim

    return onnxslim.slim(model, no_shape_infer=False, skip_fusion_patterns=None)


def fix_input_dims(model: Any, dims: dict[str, int]) -> Any:
    """Give named dynamic input dims (`batch`, `time`) fixed sizes, so shape chains become constants."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in dims:
                dim.dim_value = int(dims[dim.dim_param])
    del fixed.graph.value_info[:]  # stale symbolic shapes; folding re-infers them
    return fixed


def explicit_same_padding(model: Any) -> tuple[Any, int]:
    """Conv nodes with `auto_pad` SAME_UPPER/SAME_LOWER and unit strides get the equivalent explicit `pads`.

    Why: TVM's ONNX importer turns auto_pad into a separate zero-padding kernel before every convolution (a
    full copy of the activations, 13 times per inference of the default model); with explicit pads the
    padding stays inside the convolution, where the CPU schedule stages it per tile. With unit strides the
    pads depend only on kernel size and dilation, never on the input size, so dynamic shapes keep working.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    changed = 0
    for node in out.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        kernel = attrs.get("kernel_shape")
        if mode not in ("SAME_UPPER", "SAME_LOWER") or not kernel or any(s != 1 for s in attrs.get("strides", [])):
            continue
        dilations = attrs.get("dilations") or [1] * len(kernel)
        totals = [d * (k - 1) for k, d in zip(kernel, dilations, strict=True)]
        small = [t // 2 for t in totals]
        begin = small if mode == "SAME_UPPER" else [t - b for t, b in zip(totals, small, strict=True)]
        end = [t - b for t, b in zip(totals, begin, strict=True)]
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute("pads", begin + end)])
        changed += 1
    return out, changed


def _unroll_static_loops(model: Any, report: PrepareReport) -> Any:
    """Loops/Scans whose trip count folded to a constant become plain nodes (TVM has neither), then fold again;
    static-length sequences are resolved before (a SequenceLength trip count) and after (what bodies built)."""
    from harmonizer_deploy.frontend.loop import unroll_loops
    from harmonizer_deploy.frontend.sequence import expand_static_sequences

    model, unrolled = unroll_loops(expand_static_sequences(model)[0])
    report.unrolled_loops, report.loops_left = unrolled.unrolled, unrolled.left
    return fold_shapes(expand_static_sequences(model)[0]) if unrolled.unrolled else model


def prepare_for_tvm(model: Any, fold: bool = True, fix_dims: dict[str, int] | None = None
                    ) -> tuple[Any, PrepareReport]:
    """Inline decomposed ops, optionally fix named input dims, fold shape computations; report what changed."""
    report = PrepareReport()
    model, report.inlined = inline_decomposed(model)
    model, report.explicit_padding = explicit_same_padding(model)
    if fix_dims:
        model = fix_input_dims(model, fix_dims)
        report.fixed_dims = dict(fix_dims)
    report.ops_before = _op_counts(model)  # after inlining: `folded` counts only what folding removed
    if fold:
        from harmonizer_deploy.frontend.branch import inline_constant_ifs

        model = fold_shapes(model)
        model = _unroll_static_loops(inline_constant_ifs(model), report)  # an If on a constant: its branch
    report.ops_after = _op_counts(model)
    return model, report


def missing_tvm_converters(model: Any, converters: Any) -> list[str]:
    """`domain::op_type` of every node outside the default ONNX domain (subgraphs too) without a converter."""
    from harmonizer_deploy.frontend.hook import foreign_domain_nodes

    return [f"{d}::{o}" for d, o in foreign_domain_nodes(model, set(converters))]


def import_relax(model: Any, converters: Any, **from_onnx_kwargs: Any) -> Any:
    """TVM Relax import with the registry's domain-qualified converters (`tvm_hook`).

    TVM dispatches on op_type alone, so a custom-domain node without a converter would be imported as the
    built-in of the same name (`ai.harmonizer::Relu` as Relu) or fail obscurely: it is refused here first.
    """
    from harmonizer_deploy.core.errors import HarmonizerError
    from harmonizer_deploy.frontend.hook import from_onnx_with_converters

    missing = missing_tvm_converters(model, converters)
    if missing:
        raise HarmonizerError(
            f"no TVM converter for custom-domain ops: {', '.join(missing)}",
            "convert with --custom-op-strategy decompose or rewrite, or register a TVM converter for "
            "(domain, op_type) in the custom-op registry (docs/custom-ops.md)",
        )
    with warnings.catch_warnings():  # TVM's checker pass warns about the hook's private renamed op_types
        warnings.filterwarnings("ignore", message="No Op registered for __harmonizer__", category=UserWarning)
        return from_onnx_with_converters(model, converters, **from_onnx_kwargs)
