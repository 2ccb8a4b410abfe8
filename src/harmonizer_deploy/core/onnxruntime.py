"""The one place onnxruntime sessions are made: convert, verify, debug, bench, coverage and deploy bundles.

Why one place: every reference result in this project comes from here, so the session options that change
numbers or timings (providers, threads, spinning, logging) are chosen once and visibly. Custom-domain nodes run
from the model-local ONNX functions that convert attaches; a custom node without one would only fail deep inside
onnxruntime, so it is named here first.

This module imports nothing else from the package on purpose: deploy bundles ship a copy of it next to their
`run.py`, on machines where harmonizer_deploy is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from harmonizer_deploy.core.errors import HarmonizerError, reason
except ImportError:  # inside a deploy bundle

    class HarmonizerError(ValueError):  # type: ignore[no-redef]
        def __init__(self, message: str, fix: str = "") -> None:
            super().__init__(f"{message} — {fix}" if fix else message)

    def reason(exc: BaseException, limit: int = 200) -> str:  # type: ignore[misc]
        return next((ln.strip()[:limit] for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


DEFAULT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
CPU = ("CPUExecutionProvider",)


def unimplemented_custom_nodes(model: Any) -> list[str]:
    functions = {(f.domain, f.name) for f in model.functions}
    return sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                   if n.domain not in DEFAULT_DOMAINS and (n.domain, n.op_type) not in functions})


def ort_session(model: str | Path | bytes | Any, *, providers: Sequence[str] = CPU, threads: int | None = None,
                spinning: bool = True, quiet: bool = False) -> Any:
    """An onnxruntime session for a path, serialized bytes or ModelProto.

    `threads` sets intra-op threads (inter-op 1 when given); `spinning=False` stops idle workers from spinning,
    which otherwise slows whatever runs next in the same process (the bench interleaves backends); `quiet`
    hides onnxruntime's own warnings (coverage runs thousands of odd models).
    """
    import onnx
    import onnxruntime as ort

    what = str(model) if isinstance(model, str | Path) else "the ONNX model"
    try:  # onnx rejects damaged files; external data outside the model's folder fails in the session below
        if isinstance(model, str | Path):
            proto = onnx.load(str(model), load_external_data=False)
            source: str | bytes = str(model)  # a path keeps external data next to the model readable
        elif isinstance(model, bytes):
            proto, source = onnx.load_from_string(model), model
        else:
            proto, source = model, model.SerializeToString()
    except Exception as exc:
        raise HarmonizerError(f"{what} is not a loadable ONNX model ({reason(exc)})",
                              "re-create it with `harmonizer-deploy convert`") from exc
    missing = unimplemented_custom_nodes(proto)
    if missing:
        raise HarmonizerError(f"onnxruntime has no implementation for {', '.join(missing)}",
                              "convert with harmonizer-deploy, which attaches an ONNX function per custom op")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if quiet:
        options.log_severity_level = 3
    try:
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as exc:  # onnxruntime's InvalidGraph/Fail/NotImplemented: the model, not this tool
        raise HarmonizerError(f"onnxruntime cannot load {what} ({reason(exc, 300)})",
                              "check the model with `harmonizer-deploy ops scan`") from exc
