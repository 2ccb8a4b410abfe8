"""Which Keras layer a TF or ONNX node belongs to: how convert and `ops scan` name what failed."""

from __future__ import annotations

import re

GRAPH_ROW = "(graph)"


def layer_key(node_name: str, layer_names: list[str]) -> str:
    """The Keras layer (or, without Keras, the second-level TF name scope) a TF/ONNX node belongs to."""
    parts = node_name.split("/")
    for part in parts[:-1]:
        base = re.sub(r"_\d+$", "", part)
        if part in layer_names:
            return part
        if base in layer_names:
            return base
    if not layer_names and len(parts) >= 3:
        scope = [p for p in parts[:-1] if "PartitionedCall" not in p]
        return re.sub(r"_\d+$", "", scope[1]) if len(scope) >= 2 else GRAPH_ROW
    return GRAPH_ROW
