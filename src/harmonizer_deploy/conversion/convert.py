"""TensorFlow → ONNX with tf2onnx, then prove the ONNX model matches TensorFlow in onnxruntime."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.conversion.source import SourceModel, _keras_call, load_source
from harmonizer_deploy.core.artifacts import atomic_file, scratch_dir, sha256_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.core.extras import require
from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.core.version import __version__
from harmonizer_deploy.custom_ops.emit import attach_functions
from harmonizer_deploy.custom_ops.plan import ConversionPlan, missing_strategy_message, plan_conversion
from harmonizer_deploy.custom_ops.registry import check_strategy
from harmonizer_deploy.music.encoding import ENCODING

DEFAULT_OPSET = 17
CONVERSION_ATOL = 1e-4
# Shapes checked after conversion: different batch and time sizes exercise the dynamic axes.
CHECK_SHAPES = ((1, 32), (3, 16))
DYNAMIC_DIMS = ("batch", "time")
# function attributes that stop grappler from inlining a nested function (see `frozen_graph`)
INLINE_BLOCKERS = ("_noinline", "_XlaMustCompile", "_XlaCompile", "_XlaScope")


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


def _name_dynamic_dims(model, harmonizer: bool = True) -> None:
    """tf2onnx names dynamic dims `unk__N`; name them so every tool (and `--fix-dim`) shows the same names.

    The harmonizer: batch and time on input and output. Any other model: on the inputs, axis 0 is `batch`,
    axis 1 of a rank ≥ 3 input `time` (sequence models), any other dynamic axis `<input>_dim<axis>`."""
    if harmonizer:
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            for dim, name in zip(dims, DYNAMIC_DIMS, strict=False):
                if not dim.HasField("dim_value"):
                    dim.dim_param = name
        return
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if not dim.HasField("dim_value"):
                dim.dim_param = "batch" if axis == 0 else "time" if axis == 1 and len(dims) >= 3 else \
                    f"{value.name}_dim{axis}"


def _unknown_ops(model) -> list[str]:
    import onnx

    bad = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type, domain):
            bad.append(node.op_type)
    return sorted(set(bad))


def _native_dilations(strides: Any, data_format: str | None, dilations: Any) -> list[int] | None:
    """NHWC dilations for DepthwiseConv2dNative when the call is a stride-1 NHWC dilated conv, else None."""
    if dilations is None or (data_format or "NHWC") != "NHWC":
        return None
    rates = [int(d) for d in ([dilations] * 2 if isinstance(dilations, int) else list(dilations))]
    steps = [int(s) for s in ([strides] * 4 if isinstance(strides, int) else list(strides))]
    if len(rates) != 2 or max(rates) == 1 or any(s != 1 for s in steps):
        return None
    return [1, *rates, 1]


@contextmanager
def native_dilated_convs() -> Iterator[None]:
    """While tracing for ONNX: dilated depthwise/separable convs as one DepthwiseConv2dNative with `dilations`.

    `tf.nn.depthwise_conv2d` emulates dilation with SpaceToBatchND/BatchToSpaceND around an undilated conv;
    with a dynamic input shape tf2onnx cannot fold that back, so the Doodle's dilated layers would reach ONNX
    and TVM as pads, reshapes and transposes. The native op takes the dilations itself (same result; `convert`
    still checks the ONNX model against the original TensorFlow function), and tf2onnx maps it to one Conv."""
    import tensorflow as tf

    depthwise, separable = tf.nn.depthwise_conv2d, tf.nn.separable_conv2d

    def dilated(x: Any, kernel: Any, padding: str, rates: list[int], name: str | None) -> Any:
        # SAME as explicit pads: onnxruntime rejects auto_pad=SAME together with dilations
        pads = [0, 0]
        for size, rate in zip(kernel.shape[:2], rates[1:3], strict=True):
            total = 0 if padding == "VALID" else rate * (int(size) - 1)
            pads += [total // 2, total - total // 2]
        return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, 1, 1, 1], padding="EXPLICIT",
                                                explicit_paddings=[*pads, 0, 0], dilations=rates, name=name)

    def depthwise_conv2d(input, filter, strides, padding, data_format=None, dilations=None, name=None):
        rates = _native_dilations(strides, data_format, dilations) if isinstance(padding, str) else None
        if rates is None:
            return depthwise(input, filter, strides, padding, data_format=data_format, dilations=dilations,
                             name=name)
        return dilated(input, filter, padding, rates, name)

    def separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding,
                         data_format=None, dilations=None, name=None):
        rates = _native_dilations(strides, data_format, dilations) if isinstance(padding, str) else None
        if rates is None:
            return separable(input, depthwise_filter, pointwise_filter, strides, padding, data_format=data_format,
                             dilations=dilations, name=name)
        deep = dilated(input, depthwise_filter, padding, rates, None)
        return tf.nn.conv2d(deep, pointwise_filter, [1, 1, 1, 1], "VALID", name=name)

    tf.nn.depthwise_conv2d, tf.nn.separable_conv2d = depthwise_conv2d, separable_conv2d
    try:
        yield
    finally:
        tf.nn.depthwise_conv2d, tf.nn.separable_conv2d = depthwise, separable


def frozen_graph(call: Any) -> tuple[Any, list[str], list[str], dict[str, str]]:
    """The tf.function's graph with variables frozen and every nested function inlined, for tf2onnx.

    Keras wraps some ops in their own tf.functions marked `_noinline` (grouped convolutions run under
    `jit_compile=True`, a CPU workaround); grappler keeps those as StatefulPartitionedCall, which no ONNX op
    matches. The marks are compile hints, not semantics, so they are dropped before grappler inlines.
    Returns (graph_def, input tensor names, output tensor names, {tensor name: signature name})."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # a fresh trace, so that the native dilated convs apply even if `call` was traced before
    with native_dilated_convs():
        concrete = tf.function(call.python_function, input_signature=call.input_signature).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def(add_shapes=True)
    calls = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    for holder in [*graph_def.library.function, *calls]:  # the marks sit on functions and on call nodes
        for hint in INLINE_BLOCKERS:
            if hint in holder.attr:
                del holder.attr[hint]
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.dtypes.resource]
    outputs = [t.name for t in frozen.outputs if t.dtype != tf.dtypes.resource]
    specs = [s for s in tf.nest.flatten(concrete.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    rename = {t: s.name for t, s in zip(inputs, specs, strict=True)}
    structured = concrete.structured_outputs
    if isinstance(structured, dict):  # tf.nest flattens a dict in sorted key order, as concrete.outputs are
        rename.update(zip(outputs, sorted(structured), strict=True))
    return graph_def, inputs, outputs, rename


def tf2onnx_convert(call: Any, opset: int, **kwargs: Any) -> Any:
    """tf2onnx on the inlined, frozen graph of `call` (see `frozen_graph`); returns the ModelProto."""
    import tf2onnx

    graph_def, inputs, outputs, rename = frozen_graph(call)
    model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, name="model", input_names=inputs,
                                                    output_names=outputs, opset=opset, tensors_to_rename=rename,
                                                    **kwargs)
    return model_proto


def to_onnx(source: SourceModel, opset: int = DEFAULT_OPSET, plan: ConversionPlan | None = None):
    """Convert with tf2onnx (with the plan's custom-op handlers); raise if it reported or left unsupported ops."""
    collector = _UnsupportedOpCollector()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(collector)
    try:
        model_proto = tf2onnx_convert(source.call, opset, **(plan.extensions.kwargs() if plan else {}))
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
    _name_dynamic_dims(model_proto, source.is_harmonizer or not source.inputs)
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


def onnx_io(values: Any, initializers: set[str] | None = None) -> list[dict]:
    """name, numpy dtype and shape (a size, or the dim's name when dynamic) of ONNX graph inputs/outputs."""
    from onnx import helper

    out = []
    for v in values:
        if initializers and v.name in initializers:
            continue
        elem = v.type.tensor_type.elem_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name if elem else "float32"
        out.append({"name": v.name, "dtype": dtype,
                    "shape": [d.dim_param or d.dim_value or None for d in v.type.tensor_type.shape.dim]})
    return out


def check_feeds(source: SourceModel, proto: Any, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Seeded inputs at shapes the model accepts: its fixed dims as declared, each dynamic dim at two sizes
    (batch 1 and 3, other dynamic axes 32 and 16); integer indices inside their embedding tables."""
    from harmonizer_deploy.conversion.inputs import index_ranges, make_feeds

    initializers = {t.name for t in proto.graph.initializer}
    inputs = onnx_io(proto.graph.input, initializers)
    ranges = index_ranges(proto)
    return [make_feeds(inputs, seed + k, 1, batch, steps, int_ranges=ranges)[0]
            for k, (batch, steps) in enumerate(CHECK_SHAPES)]


def compare_with_tensorflow(source: SourceModel, onnx_bytes: bytes, seed: int = 0, proto: Any = None) -> float:
    """Max abs difference between TensorFlow and onnxruntime, over every output, on seeded inputs of two shapes."""
    import onnx

    proto = proto if proto is not None else onnx.load_from_string(onnx_bytes)
    session = ort_session(onnx_bytes)
    out_names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for feeds in check_feeds(source, proto, seed):
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        try:
            expected = source.run(feeds)
        except Exception as exc:  # TF raises many types for inputs the model rejects
            raise HarmonizerError(
                f"TensorFlow rejects the check inputs {shapes}: {str(exc).strip().splitlines()[0][:200]}",
                "declare the sizes the model needs in its input signature (fixed dims are respected)",
            ) from exc
        try:
            actual = session.run(None, feeds)
        except Exception as exc:
            raise HarmonizerError(
                f"onnxruntime cannot run the converted model at {shapes}: {str(exc).strip().splitlines()[0][:240]}",
                "try another --opset, or `harmonizer-deploy ops scan` to find the layer",
            ) from exc
        keys = out_names if set(out_names) <= set(expected) else list(expected)
        for key, got in zip(keys, actual, strict=True):
            diff = np.abs(np.asarray(got, np.float64) - np.asarray(expected[key], np.float64))
            worst = max(worst, float(np.max(diff)) if diff.size else 0.0)
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
    trust_model: bool = False,
) -> ConvertResult:
    """Convert MODEL (bundled name, .keras file or SavedModel dir) to ONNX and check it against TensorFlow.

    Custom layers/ops found in the registry are converted with `custom_op_strategy` (rewrite, custom-op,
    decompose; None = each op's preferred one; "none" = registry off, plain tf2onnx). A SavedModel with
    side-effect ops (file I/O, PyFunc, ...) is refused unless `trust_model`.
    """
    require("convert", "tensorflow", "tf2onnx")
    if not 13 <= opset <= 21:  # before the scratch folder: a bad argument creates nothing
        raise HarmonizerError(f"opset {opset} is outside the supported range", "choose an opset from 13 to 21")
    with scratch_dir(Path(output)):  # TF autograph's generated modules: next to the output, deleted after
        return _convert(model, output, opset, seed, custom_op_strategy, trust_model)


def _convert(model: str | Path | None, output: str | Path, opset: int, seed: int, custom_op_strategy: str | None,
             trust_model: bool) -> ConvertResult:
    import onnx

    output = Path(output)
    strategy = check_strategy(custom_op_strategy)
    source = load_source(model, trust_model)
    plan = None if strategy == "none" else plan_conversion(source, strategy, output)
    convert_source = source
    if plan and plan.rewritten_model is not None:
        # convert the rewritten model; it is still checked against the original TensorFlow model below
        convert_source = SourceModel("keras", str(plan.rewritten_path), source.sha256,
                                     _keras_call(plan.rewritten_model, source.inputs, source.outputs),
                                     source.inputs, source.outputs, keras_model=plan.rewritten_model)
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
    err = compare_with_tensorflow(source, data, seed, proto)
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

    from harmonizer_deploy.conversion.inputs import index_ranges

    sidecar = sidecar_path_for(output)
    write_json(sidecar, {
        "format_version": 1,
        "onnx": {"path": output.name, "sha256": sha256_file(output), "opset": opset, "num_nodes": len(proto.graph.node),
                 "op_types": op_types},
        "inputs": onnx_io(proto.graph.input, {t.name for t in proto.graph.initializer}),
        "outputs": onnx_io(proto.graph.output),
        "signature": source.signature(),  # as the TensorFlow model declares it (None = dynamic)
        "index_ranges": {k: list(v) for k, v in index_ranges(proto).items()},
        "encoding": ENCODING if source.is_harmonizer else None,
        "source": source.describe(),
        "conversion_check": {"max_abs_err": err, "atol": CONVERSION_ATOL,
                             "shapes": [list(s) for s in CHECK_SHAPES], "seed": seed},
        "custom_ops": plan.to_dict() if plan else {"choices": {}, "registry": "off"},
        "versions": versions(),
    })
    return ConvertResult(output, sidecar, err, opset, len(proto.graph.node), op_types,
                         dict(plan.choices) if plan else {})
