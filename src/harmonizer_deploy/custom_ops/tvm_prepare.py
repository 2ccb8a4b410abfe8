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

from .registry import DECOMPOSED_DOMAIN


@dataclass
class PrepareReport:
    inlined: list[str] = field(default_factory=list)  # domain::op of the functions inlined
    ops_before: dict[str, int] = field(default_factory=dict)  # after inlining, before folding
    fixed_dims: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)

    @property
    def folded(self) -> dict[str, int]:
        """Nodes removed per op type by folding (shape ops mostly)."""
        return {k: v - self.ops_after.get(k, 0) for k, v in self.ops_before.items() if v > self.ops_after.get(k, 0)}

    def to_dict(self) -> dict:
        return {"inlined": self.inlined, "folded": self.folded, "fixed_dims": self.fixed_dims,
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


def prepare_for_tvm(model: Any, fold: bool = True, fix_dims: dict[str, int] | None = None
                    ) -> tuple[Any, PrepareReport]:
    """Inline decomposed ops, optionally fix named input dims, fold shape computations; report what changed."""
    report = PrepareReport()
    model, report.inlined = inline_decomposed(model)
    if fix_dims:
        model = fix_input_dims(model, fix_dims)
        report.fixed_dims = dict(fix_dims)
    report.ops_before = _op_counts(model)  # after inlining: `folded` counts only what folding removed
    if fold:
        model = fold_shapes(model)
    report.ops_after = _op_counts(model)
    return model, report


def missing_tvm_converters(model: Any, converters: Any) -> list[str]:
    """`domain::op_type` of every node outside the default ONNX domain (subgraphs too) without a converter."""
    from ..tvm_hook import foreign_domain_nodes

    return [f"{d}::{o}" for d, o in foreign_domain_nodes(model, set(converters))]


def import_relax(model: Any, converters: Any, **from_onnx_kwargs: Any) -> Any:
    """TVM Relax import with the registry's domain-qualified converters (`tvm_hook`).

    TVM dispatches on op_type alone, so a custom-domain node without a converter would be imported as the
    built-in of the same name (`ai.harmonizer::Relu` as Relu) or fail obscurely: it is refused here first.
    """
    from ..errors import HarmonizerError
    from ..tvm_hook import from_onnx_with_converters

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
