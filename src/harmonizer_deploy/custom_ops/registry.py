"""The custom-op registry: one entry per custom layer/op, with the strategies that carry it to ONNX and TVM.

Strategies:
- rewrite: replace the Keras layer by one made of standard ops before conversion (the modified model is saved);
- custom-op: emit one node in domain `ai.harmonizer`; onnxruntime runs it from a model-local ONNX function,
  TVM from a hand-written Relax converter registered for the domain-qualified name;
- decompose: emit one node in domain `ai.harmonizer.decomposed` backed by a local function of standard ops,
  inlined before TVM import.
This module imports no TensorFlow or TVM, so `ops scan` on an ONNX file stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError

DOMAIN = "ai.harmonizer"
DECOMPOSED_DOMAIN = "ai.harmonizer.decomposed"
CUSTOM_DOMAINS = (DOMAIN, DECOMPOSED_DOMAIN)
STRATEGIES = ("rewrite", "custom-op", "decompose")
# What each strategy needs, for messages that say what could be added.
STRATEGY_HELP = {
    "rewrite": "a Keras layer of standard ops replacing it",
    "custom-op": "a tf2onnx handler + an ONNX function for onnxruntime + a TVM Relax converter",
    "decompose": "an ONNX function of standard ops",
}


@dataclass(frozen=True)
class CustomOp:
    """How one custom op travels TF → ONNX → TVM. Callables are imported lazily by the strategy modules."""

    op_type: str  # node op_type in ai.harmonizer / ai.harmonizer.decomposed
    summary: str
    keras_class: str | None = None  # the custom Keras layer it stands for
    tf_op: str | None = None  # a single TF op it stands for (handled by a tf2onnx op handler)
    # keras layer → a layer of standard ops computing the same thing (weights are copied by name order)
    rewrite: Callable[[Any], Any] | None = None
    # keras layer → (extra constant inputs in order, node attributes) for the collapsed node
    layer_inputs: Callable[[Any], tuple[list[Any], dict[str, Any]]] | None = None
    # tf2onnx (graph, node) → node attributes, for `tf_op` entries
    tf_attributes: Callable[[Any, Any], dict[str, Any]] | None = None
    # (domain, opset) → onnx.FunctionProto of standard ops, named op_type
    onnx_function: Callable[[str, int], Any] | None = None
    # TVM converter: (bb, inputs, attrs, ctx: tvm_hook.ConvertContext) → relax.Expr; params via ctx.params
    tvm_converter: Callable[..., Any] | None = None
    preferred: str = "decompose"

    @property
    def strategies(self) -> tuple[str, ...]:
        emits = self.tf_op is not None or self.layer_inputs is not None
        have = {
            "rewrite": self.rewrite is not None,
            "custom-op": emits and self.onnx_function is not None and self.tvm_converter is not None,
            "decompose": emits and self.onnx_function is not None,
        }
        return tuple(s for s in STRATEGIES if have[s])


class CustomOpRegistry:
    """Entries by op_type, findable by Keras class name or TF op type."""

    def __init__(self) -> None:
        self._entries: dict[str, CustomOp] = {}
        # converters for standard-domain ops TVM's frontend lacks, keyed ("", op_type)
        self.gap_converters: dict[tuple[str, str], Callable[..., Any]] = {}

    def register(self, entry: CustomOp) -> CustomOp:
        if entry.preferred not in entry.strategies:
            raise ValueError(f"{entry.op_type}: preferred strategy {entry.preferred} is not available")
        self._entries[entry.op_type] = entry
        return entry

    def unregister(self, op_type: str) -> None:
        self._entries.pop(op_type, None)

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, op_type: str) -> CustomOp | None:
        return self._entries.get(op_type)

    def for_keras_class(self, name: str) -> CustomOp | None:
        return next((e for e in self if e.keras_class == name), None)

    def for_tf_op(self, name: str) -> CustomOp | None:
        return next((e for e in self if e.tf_op == name), None)

    def tvm_converters(self) -> dict[tuple[str, str], Callable[..., Any]]:
        converters = {(DOMAIN, e.op_type): e.tvm_converter for e in self if e.tvm_converter is not None}
        return {**self.gap_converters, **converters}


def check_strategy(strategy: str | None) -> str | None:
    """None/"auto" → each entry's preferred strategy; "none" → registry off; else one of STRATEGIES."""
    if strategy in (None, "auto"):
        return None
    if strategy not in (*STRATEGIES, "none"):
        raise HarmonizerError(f"unknown custom-op strategy {strategy!r}",
                              f"use one of auto, none, {', '.join(STRATEGIES)}")
    return strategy


_DEFAULT: CustomOpRegistry | None = None


def default_registry() -> CustomOpRegistry:
    """The package's registry with the harmonizer variants' ops (built on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        from harmonizer_deploy.custom_ops.catalog import register_all

        registry = CustomOpRegistry()
        register_all(registry)
        _DEFAULT = registry
    return _DEFAULT
