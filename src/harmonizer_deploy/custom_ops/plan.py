"""Pick a strategy for every custom layer/op of a model and prepare the conversion accordingly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.custom_ops.emit import Tf2OnnxExtensions, add_layer, add_tf_op
from harmonizer_deploy.custom_ops.registry import (
    STRATEGIES,
    STRATEGY_HELP,
    CustomOp,
    CustomOpRegistry,
    default_registry,
)


@dataclass
class Found:
    """One custom piece of a model: a Keras layer (by class) or a TF op, and its registry entry if any."""

    kind: str  # "keras-layer" | "tf-op"
    name: str  # layer name or TF op type
    class_name: str  # Keras class or TF op type
    entry: CustomOp | None


@dataclass
class ConversionPlan:
    choices: dict[str, str] = field(default_factory=dict)  # "layer or op" → strategy
    extensions: Tf2OnnxExtensions = field(default_factory=Tf2OnnxExtensions)
    rewritten_model: Any = None  # Keras model after rewrites (None: unchanged)
    rewritten_path: Path | None = None

    def to_dict(self) -> dict:
        return {"choices": self.choices, "rewritten_model": str(self.rewritten_path) if self.rewritten_path else None}


def is_custom_layer(layer: Any) -> bool:
    return not type(layer).__module__.startswith(("keras", "tf_keras", "tensorflow"))


def tf_op_types(call: Any) -> set[str]:
    """Every TF op type in a tf.function's graph, including the functions it calls."""
    graph_def = call.get_concrete_function().graph.as_graph_def()
    types = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        types |= {n.op for n in fn.node_def}
    return types


def find_custom(source: Any, registry: CustomOpRegistry) -> list[Found]:
    found: list[Found] = []
    if source.keras_model is not None:
        for layer in source.keras_model.layers:
            cls = type(layer).__name__
            entry = registry.for_keras_class(cls)
            if is_custom_layer(layer) or entry is not None:  # built-in layers too when the registry knows them
                found.append(Found("keras-layer", layer.name, cls, entry))
        return found
    for op in sorted(tf_op_types(source.call)):
        entry = registry.for_tf_op(op)
        if entry is not None:
            found.append(Found("tf-op", op, op, entry))
    return found


def plan_conversion(source: Any, strategy: str | None, output: Path, registry: CustomOpRegistry | None = None
                    ) -> ConversionPlan:
    """Strategy per custom piece (`strategy` forces one for all; None: each entry's preferred one)."""
    registry = registry or default_registry()
    plan = ConversionPlan()
    rewrites: dict[str, CustomOp] = {}
    for item in find_custom(source, registry):
        entry = item.entry
        if entry is None:
            continue  # a custom layer of standard ops: converted as is; unsupported ops fail in to_onnx
        chosen = strategy or entry.preferred
        if chosen not in entry.strategies:
            raise HarmonizerError(
                f"{item.class_name} ({item.name}) has no {chosen!r} strategy in the registry (it has "
                f"{', '.join(entry.strategies)})",
                f"pass --custom-op-strategy {entry.strategies[0]}, or add {STRATEGY_HELP[chosen]}",
            )
        plan.choices[item.name] = chosen
        if chosen == "rewrite":
            rewrites[item.name] = entry
        elif entry.tf_op is not None:
            add_tf_op(plan.extensions, entry, chosen)
        elif item.kind == "keras-layer":
            add_layer(plan.extensions, entry, chosen, source.keras_model.get_layer(item.name))
    if rewrites:
        plan.rewritten_model = rewrite_keras(source.keras_model, rewrites)
        plan.rewritten_path = output.with_name(output.stem + ".rewritten.keras")
    return plan


def rewrite_keras(model: Any, rewrites: dict[str, CustomOp]) -> Any:
    """Clone the Keras model with the named layers replaced by their standard-op rewrites; copy all weights."""
    import keras

    def clone(layer: Any) -> Any:
        if layer.name in rewrites:
            return rewrites[layer.name].rewrite(layer)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            new.get_layer(layer.name).set_weights(weights)
    return new


def missing_strategy_message(ops: list[str]) -> str:
    return ("add a registry entry (harmonizer_deploy.custom_ops) with one of: "
            + "; ".join(f"{s} = {STRATEGY_HELP[s]}" for s in STRATEGIES) + " (see docs/custom-ops.md)")
