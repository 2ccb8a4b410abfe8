"""TensorFlow → ONNX with tf2onnx, then prove the ONNX model matches TensorFlow in onnxruntime."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.conversion.source import SourceModel, _keras_call, input_signature, load_source
from harmonizer_deploy.core.artifacts import atomic_file, sha256_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.core.version import __version__
from harmonizer_deploy.custom_ops.emit import attach_functions
from harmonizer_deploy.custom_ops.plan import ConversionPlan, missing_strategy_message, plan_conversion
from harmonizer_deploy.custom_ops.registry import check_strategy
from harmonizer_deploy.music.encoding import ENCODING, INPUT_NAME, OUTPUT_NAME, realistic_inputs

DEFAULT_OPSET = 17
CONVERSION_ATOL = 1e-4
# Shapes checked after conversion: different batch and time sizes exercise the dynamic axes.
CHECK_SHAPES = ((1, 32), (3, 16))
DYNAMIC_DIMS = ("batch", "time")


@dataclass
class ConvertResult:
    onnx_path: Path
    sidecar_path: Path
    max_abs_err: float
    opset: int
    num_nodes: int
    op_types: dict[str, int]
    custom_ops: dict[str, str] = field(default_factory=dict)  # layer/op → strategy used

    def to_dict(self) -> dict:
        return {"onnx": str(self.onnx_path), "sidecar": str(self.sidecar_path), "max_abs_err": self.max_abs_err,
                "opset": self.opset, "num_nodes": self.num_nodes, "op_types": self.op_types,
                "custom_ops": self.custom_ops}


class _UnsupportedOpCollector(logging.Handler):
    """tf2onnx only *logs* ops it cannot convert; collect those lines so conversion can fail loudly."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "not supported" in text or "Unsupported ops" in text or "failed to convert" in text.lower():
            self.messages.append(text.splitlines()[0])


def sidecar_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def _name_dynamic_dims(model) -> None:
    """tf2onnx names dynamic dims `unk__N`; call them batch and time so every tool shows the same names."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, DYNAMIC_DIMS, strict=False):
            if not dim.HasField("dim_value"):
                dim.dim_param = name


def _unknown_ops(model) -> list[str]:
    import onnx

    bad = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type, domain):
            bad.append(node.op_type)
    return sorted(set(bad))


def to_onnx(source: SourceModel, opset: int = DEFAULT_OPSET, plan: ConversionPlan | None = None):
    """Convert with tf2onnx (with the plan's custom-op handlers); raise if it reported or left unsupported ops."""
    import tf2onnx

    collector = _UnsupportedOpCollector()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(collector)
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            source.call, input_signature=input_signature(), opset=opset, **(plan.extensions.kwargs() if plan else {})
        )
    except HarmonizerError:
        raise
    except Exception as exc:
        raise HarmonizerError(
            f"tf2onnx could not convert {source.path}: {reason(exc, 300)}",
            "run `harmonizer-deploy doctor` and check the op list with `harmonizer-deploy ops scan`",
        ) from exc
    finally:
        logger.removeHandler(collector)
    unknown = _unknown_ops(model_proto)
    if collector.messages or unknown:
        ops = ", ".join(unknown) or "; ".join(collector.messages)
        raise HarmonizerError(
            f"tf2onnx could not convert these ops of {source.path} and the custom-op registry has no strategy "
            f"for them: {ops}", missing_strategy_message(unknown),
        )
    if plan and plan.extensions.emitted:
        attach_functions(model_proto, plan.extensions.emitted, opset)
    _name_dynamic_dims(model_proto)
    return model_proto


def _layers_named_in(message: str, source: SourceModel) -> list[str]:
    """Keras layers whose name scope appears in the node names of an ONNX checker message."""
    nodes = re.findall(r"node name: ([^)\s]+)", message)
    if source.keras_model is None:  # a bare SavedModel: the TF name scopes, as `ops scan` groups them
        from harmonizer_deploy.conversion.layers import GRAPH_ROW, layer_key

        return sorted({layer_key(node, []) for node in nodes} - {GRAPH_ROW})
    return sorted({layer.name for layer in source.keras_model.layers for node in nodes
                   if re.search(rf"(^|/){re.escape(layer.name)}(_\d+)?/", node)})


def check_onnx_file(path: Path):
    """Load and run onnx.checker on a file; one clear line if it is missing, corrupt or invalid."""
    import onnx

    if not path.is_file():
        raise HarmonizerError(f"ONNX model not found: {path}", "run `harmonizer-deploy convert` first")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise HarmonizerError(
            f"{path} is not a readable ONNX model ({reason(exc, 160)})",
            "re-create it with `harmonizer-deploy convert`",
        ) from exc
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise HarmonizerError(
            f"{path} fails the ONNX checker: {reason(exc)}",
            "re-create it with `harmonizer-deploy convert`",
        ) from exc
    bad = _non_utf8_name(model.graph)
    if bad is not None:  # the checker lets these through; protobuf then hands out bytes where names are str
        raise HarmonizerError(f"{path} has a name that is not valid UTF-8 ({bad!r})",
                              "re-create it with `harmonizer-deploy convert`")
    return model


def _non_utf8_name(graph: Any) -> bytes | None:
    """The first graph-level name (value, node, dim) that protobuf could not decode as UTF-8, else None."""
    values = [*graph.input, *graph.output, *graph.value_info]
    names = [v.name for v in values] + [d.dim_param for v in values for d in v.type.tensor_type.shape.dim]
    names += [t.name for t in graph.initializer]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
    return next((n for n in names if isinstance(n, bytes)), None)


def compare_with_tensorflow(source: SourceModel, onnx_bytes: bytes, seed: int = 0) -> float:
    """Max abs difference between TensorFlow and onnxruntime on seeded realistic inputs of several shapes."""
    session = ort_session(onnx_bytes)
    worst = 0.0
    for k, (batch, steps) in enumerate(CHECK_SHAPES):
        x = realistic_inputs(seed + k, batch, steps)
        expected = source.run(x)[OUTPUT_NAME]
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        worst = max(worst, float(np.max(np.abs(actual - expected))))
    return worst


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"harmonizer_deploy": __version__}
    for pkg in ("tensorflow-cpu", "tensorflow", "tf2onnx", "onnx", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def convert(
    model: str | Path | None = None,
    output: str | Path = "build/model.onnx",
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    custom_op_strategy: str | None = None,
) -> ConvertResult:
    """Convert MODEL (bundled name, .keras file or SavedModel dir) to ONNX and check it against TensorFlow.

    Custom layers/ops found in the registry are converted with `custom_op_strategy` (rewrite, custom-op,
    decompose; None = each op's preferred one; "none" = registry off, plain tf2onnx).
    """
    import onnx

    if not 13 <= opset <= 21:
        raise HarmonizerError(f"opset {opset} is outside the supported range", "choose an opset from 13 to 21")
    output = Path(output)
    strategy = check_strategy(custom_op_strategy)
    source = load_source(model)
    plan = None if strategy == "none" else plan_conversion(source, strategy, output)
    convert_source = source
    if plan and plan.rewritten_model is not None:
        # convert the rewritten model; it is still checked against the original TensorFlow model below
        convert_source = SourceModel("keras", str(plan.rewritten_path), source.sha256,
                                     _keras_call(plan.rewritten_model), keras_model=plan.rewritten_model)
    proto = to_onnx(convert_source, opset, plan)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        layers = _layers_named_in(str(exc), convert_source)
        lines = str(exc).strip().splitlines()
        first = next((ln for ln in lines if any(f"/{name}" in ln for name in layers)),
                     lines[-1] if lines else reason(exc))[:240]
        if layers and source.keras_model is None:
            raise HarmonizerError(
                f"tf2onnx turned the ops under scope(s) {', '.join(layers)} of this SavedModel into an invalid ONNX "
                f"model ({first})",
                "convert the Keras model (.keras or bundled name) instead, so the custom-op registry's layer "
                "strategies apply (a SavedModel only gets its TF-op entries); `harmonizer-deploy ops scan` shows "
                "which layers have a strategy",
            ) from exc
        if layers:
            raise HarmonizerError(
                f"tf2onnx turned layer(s) {', '.join(layers)} into an invalid ONNX model ({first})",
                "convert them through the custom-op registry (--custom-op-strategy rewrite|custom-op|decompose); "
                "`harmonizer-deploy ops scan` shows which layers have a strategy",
            ) from exc
        raise HarmonizerError(f"converted model fails the ONNX checker: {first}", "report this conversion bug") from exc
    data = proto.SerializeToString()
    err = compare_with_tensorflow(source, data, seed)
    if not err <= CONVERSION_ATOL:
        raise HarmonizerError(
            f"ONNX output differs from TensorFlow by {err:.3g} (allowed {CONVERSION_ATOL})",
            "the conversion is wrong; try another --opset or check custom layers with `ops scan`",
        )
    with atomic_file(output) as tmp:
        tmp.write_bytes(data)
    if plan and plan.rewritten_model is not None:
        with atomic_file(plan.rewritten_path) as tmp:
            plan.rewritten_model.save(tmp.with_suffix(".keras"))
            tmp.with_suffix(".keras").replace(tmp)
    op_types: dict[str, int] = {}
    for node in proto.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        op_types[key] = op_types.get(key, 0) + 1

    def io(values):
        return [{"name": v.name, "dtype": "float32",
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]

    sidecar = sidecar_path_for(output)
    write_json(sidecar, {
        "format_version": 1,
        "onnx": {"path": output.name, "sha256": sha256_file(output), "opset": opset, "num_nodes": len(proto.graph.node),
                 "op_types": op_types},
        "inputs": io(proto.graph.input),
        "outputs": io(proto.graph.output),
        "encoding": ENCODING,
        "source": source.describe(),
        "conversion_check": {"max_abs_err": err, "atol": CONVERSION_ATOL,
                             "shapes": [list(s) for s in CHECK_SHAPES], "seed": seed},
        "custom_ops": plan.to_dict() if plan else {"choices": {}, "registry": "off"},
        "versions": versions(),
    })
    return ConvertResult(output, sidecar, err, opset, len(proto.graph.node), op_types,
                         dict(plan.choices) if plan else {})
