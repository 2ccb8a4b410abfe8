"""Plant a wrong result on the TVM side only, to test that `debug localize` finds it.

The plant is an ONNX-level mutation applied inside the importer that `compile` and the debugging sub-model
builds use (`relax_import.import_onnx`): the named node's outputs are multiplied by `factor` before TVM sees the
model. onnxruntime still runs the untouched model, so the planted node is the one place they differ. Tests
install it with pytest's monkeypatch, so removing the plant is `monkeypatch.undo()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def scale_node_output(model: Any, node_name: str, factor: float) -> Any:
    """A copy of `model` where `node_name`'s first output is multiplied by `factor`; unchanged if absent."""
    import onnx
    from onnx import helper, numpy_helper

    index = next((i for i, n in enumerate(model.graph.node) if n.name == node_name), None)
    if index is None:
        return model
    planted = onnx.ModelProto()
    planted.CopyFrom(model)
    node = planted.graph.node[index]
    original = node.output[0]
    node.output[0] = f"{original}__unplanted"
    factor_name = f"{original}__plant_factor"
    planted.graph.initializer.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), factor_name))
    mul = helper.make_node("Mul", [node.output[0], factor_name], [original], name=f"plant/{node_name}")
    planted.graph.node.insert(index + 1, mul)
    return planted


def planted_importer(original: Callable, node_name: str, factor: float) -> Callable:
    def importer(onnx_model: Any, *args: Any, **kwargs: Any):
        return original(scale_node_output(onnx_model, node_name, factor), *args, **kwargs)

    return importer


def install(monkeypatch: Any, node_name: str, factor: float) -> None:
    from harmonizer_deploy.compiler import relax_import as compiler

    monkeypatch.setattr(compiler, "import_onnx", planted_importer(compiler.import_onnx, node_name, factor))
