"""onnxruntime for models with custom-domain nodes: the one place sessions are made (convert and verify).

Custom nodes run from the model-local ONNX functions that convert attaches; a custom node without one would
only fail deep inside onnxruntime, so it is named here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError, reason

DEFAULT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def unimplemented_custom_nodes(model: Any) -> list[str]:
    functions = {(f.domain, f.name) for f in model.functions}
    return sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                   if n.domain not in DEFAULT_DOMAINS and (n.domain, n.op_type) not in functions})


def ort_session(model: str | Path | bytes | Any) -> Any:
    """An onnxruntime CPU session for a path, serialized bytes or ModelProto."""
    import onnx
    import onnxruntime as ort

    what = str(model) if isinstance(model, str | Path) else "the ONNX model"
    try:  # onnx rejects damaged files and external data outside the model's folder (ValidationError)
        if isinstance(model, str | Path):
            proto = onnx.load(str(model))
        elif isinstance(model, bytes):
            proto = onnx.load_from_string(model)
        else:
            proto = model
    except Exception as exc:
        raise HarmonizerError(f"{what} is not a loadable ONNX model ({reason(exc)})",
                              "re-create it with `harmonizer-deploy convert`") from exc
    missing = unimplemented_custom_nodes(proto)
    if missing:
        raise HarmonizerError(f"onnxruntime has no implementation for {', '.join(missing)}",
                              "convert with harmonizer-deploy, which attaches an ONNX function per custom op")
    try:
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's InvalidGraph/Fail/NotImplemented: the model, not this tool
        raise HarmonizerError(f"onnxruntime cannot load {what} ({reason(exc, 300)})",
                              "check the model with `harmonizer-deploy ops scan`") from exc
