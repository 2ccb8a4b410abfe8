"""`ops scan`: which layers and ops of a model break the TF → tf2onnx → ONNX → TVM chain, and what fixes them.

One row per Keras layer (or per TF name scope for a SavedModel, per op type for an ONNX file): its TF ops,
whether tf2onnx has handlers for them, the ONNX ops it produced (with domain), whether TVM's Relax frontend (or
the registry) has converters for those, whether the plain conversion matched TensorFlow in onnxruntime, and the
registry's strategies. The conversion scanned is the plain one (registry off): it shows what needs the registry.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harmonizer_deploy.conversion.layers import layer_key
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.custom_ops.plan import is_custom_layer
from harmonizer_deploy.custom_ops.registry import (
    CUSTOM_DOMAINS,
    DECOMPOSED_DOMAIN,
    STRATEGY_HELP,
    CustomOpRegistry,
    default_registry,
)

# TF graph plumbing that tf2onnx consumes without an op handler.
PLUMBING = {"Placeholder", "Const", "Identity", "IdentityN", "NoOp", "ReadVariableOp", "VarHandleOp",
            "StatefulPartitionedCall", "PartitionedCall", "_Arg", "_Retval", "StopGradient"}
DEFAULT_DOMAINS = ("", "ai.onnx")
SHAPE_OPS = {"Shape", "Size"}
@dataclass
class ScanRow:
    layer: str
    keras_class: str = ""
    custom: bool = False
    tf_ops: list[str] = field(default_factory=list)
    tf2onnx_missing: list[str] = field(default_factory=list)  # TF ops without a tf2onnx handler
    onnx_ops: list[str] = field(default_factory=list)  # "Op" or "domain::Op"
    tvm_missing: list[str] = field(default_factory=list)  # ONNX ops TVM cannot import
    runtime_shapes: bool = False  # Shape ops: shapes computed at run time (TVM may reject them)
    onnx_check: str = ""  # the ONNX checker's complaint about this layer's nodes, if any
    verified: str = "–"
    strategies: list[str] = field(default_factory=list)
    status: str = "ok"
    fix: str = ""

    @property
    def breaks(self) -> bool:
        return self.status != "ok"


@dataclass
class ScanReport:
    model: str
    kind: str
    rows: list[ScanRow]
    tf2onnx_unsupported: list[str] = field(default_factory=list)
    tvm_import: str = "not tried"
    verified: str = "–"
    # the same model converted with the registry (each op's preferred strategy), when it has custom ops
    with_registry: dict = field(default_factory=dict)
    # per node: the compile-time coverage check's classification (frontend/coverage_check.py), ONNX files only
    coverage_nodes: list[dict] = field(default_factory=list)

    @property
    def broken(self) -> list[ScanRow]:
        return [r for r in self.rows if r.breaks]

    def to_dict(self) -> dict:
        return {"model": self.model, "kind": self.kind, "tf2onnx_unsupported": self.tf2onnx_unsupported,
                "tvm_import": self.tvm_import, "verified": self.verified, "with_registry": self.with_registry,
                "breaks": [r.layer for r in self.broken], "rows": [asdict(r) for r in self.rows],
                "coverage_nodes": self.coverage_nodes}


def find_models(path: str | Path) -> list[Path]:
    """Models under `path`: itself when it is one, else every SavedModel dir, .keras and .onnx file inside
    (an extracted archive)."""
    path = Path(path)
    if not path.exists():
        raise HarmonizerError(f"model not found: {path}", "pass a .keras file, a SavedModel dir, an .onnx file "
                              "or a directory holding them (e.g. from `harmonizer-deploy extract`)")
    if path.is_file() or (path / "saved_model.pb").is_file():
        return [path]
    found = sorted({p.parent for p in path.rglob("saved_model.pb")} | set(path.rglob("*.keras"))
                   | set(path.rglob("*.onnx")))
    if not found:
        raise HarmonizerError(f"no model in {path}", "expected a SavedModel (saved_model.pb), .keras or .onnx file")
    return found


def scan(model: str | Path | None, registry: CustomOpRegistry | None = None, check_tvm: bool = True
         ) -> list[ScanReport]:
    """Scan MODEL (bundled name, .keras, SavedModel dir, .onnx, or a directory of those)."""
    registry = registry or default_registry()
    from harmonizer_deploy.music.model import bundled_models

    if model is None or (not Path(str(model)).exists() and str(model) in bundled_models()):
        return [_scan_tf(model, registry, check_tvm)]
    reports = []
    for path in find_models(model):
        if path.suffix == ".onnx":
            reports.append(_scan_onnx(path, registry, check_tvm))
        else:
            reports.append(_scan_tf(path, registry, check_tvm))
    return reports


# ---------------------------------------------------------------------------------------------------------
# TVM side


def tvm_known_ops() -> set[str]:
    from harmonizer_deploy.frontend.hook import tvm_onnx_op_types

    return tvm_onnx_op_types() | {"Constant", "If"}


def _onnx_name(node: Any) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def _tvm_missing(onnx_model: Any, names: list[str], registry: CustomOpRegistry) -> list[str]:
    known = tvm_known_ops()
    converters = {f"{d}::{o}" if d not in DEFAULT_DOMAINS else o for d, o in registry.tvm_converters()}
    functions = {f"{f.domain}::{f.name}" for f in onnx_model.functions}
    missing = []
    for name in names:
        if "::" in name:
            decomposed = name.startswith(DECOMPOSED_DOMAIN + "::") and name in functions
            if name not in converters and not decomposed:
                missing.append(name)
        elif name not in known and name not in converters:
            missing.append(name)
    return missing


def _try_tvm_import(onnx_model: Any, registry: CustomOpRegistry) -> str:
    from harmonizer_deploy.custom_ops.tvm_prepare import import_relax, prepare_for_tvm

    try:
        prepared, report = prepare_for_tvm(onnx_model)
        import_relax(prepared, registry.tvm_converters(), keep_params_in_input=True)
    except Exception as exc:  # TVM raises many types; the first line is the useful part
        return "fails: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    folded = ", ".join(f"{k}×{v}" for k, v in sorted(report.folded.items()))
    return "ok" + (f" (folded {folded})" if folded else "")


# ---------------------------------------------------------------------------------------------------------
# ONNX files


def _scan_onnx(path: Path, registry: CustomOpRegistry, check_tvm: bool) -> ScanReport:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise HarmonizerError(f"{path} is not a readable ONNX model", "re-create it") from exc
    functions = {(f.domain, f.name) for f in model.functions}
    counts = Counter(_onnx_name(n) for n in model.graph.node)
    rows = []
    for name, count in sorted(counts.items()):
        domain, _, op = name.rpartition("::")
        row = ScanRow(layer=f"{name} ×{count}", onnx_ops=[name])
        entry = registry.get(op) if domain in CUSTOM_DOMAINS or not domain else None
        if not domain and not onnx.defs.has(op):
            row.status, row.fix = "not an ONNX op", _fix(entry)
        elif domain and (domain, op) not in functions:
            row.status = "no onnxruntime implementation (no local function)"
            row.fix = _fix(entry)
        row.tvm_missing = _tvm_missing(model, [name], registry) if check_tvm else []
        if row.tvm_missing and row.status == "ok":
            row.status, row.fix = "breaks at TVM import (no converter)", _fix(entry)
        row.runtime_shapes = op in SHAPE_OPS
        row.strategies = list(entry.strategies) if entry else []
        row.custom = bool(domain)
        rows.append(row)
    report = ScanReport(str(path), "onnx", rows, coverage_nodes=_coverage_nodes(model))
    if check_tvm and not any(r.breaks for r in rows):
        report.tvm_import = _try_tvm_import(model, registry)
    return report


def _coverage_nodes(model: Any) -> list[dict]:
    """Each default-domain node as `compile` classifies it: known mismatch (refused), untested, or tested."""
    from dataclasses import asdict as as_dict

    from harmonizer_deploy.frontend.coverage_check import check_model

    return [as_dict(f) for f in check_model(model).findings if "::" not in f.klass]


def _fix(entry: Any) -> str:
    if entry is None:
        return "no registry strategy: add one of " + ", ".join(f"{s} ({h})" for s, h in STRATEGY_HELP.items())
    return f"convert with --custom-op-strategy {entry.preferred} (registry has: {', '.join(entry.strategies)})"


# ---------------------------------------------------------------------------------------------------------
# TensorFlow models


def _tf_nodes(call: Any) -> list[tuple[str, str]]:
    graph_def = call.get_concrete_function().graph.as_graph_def()
    nodes = [(n.name, n.op) for n in graph_def.node]
    for fn in graph_def.library.function:
        nodes += [(n.name, n.op) for n in fn.node_def]
    return nodes


def _plain_conversion(source: Any) -> tuple[Any, list[str]]:
    """tf2onnx with the registry off: the ONNX model (possibly holding unconverted TF ops) and the op types
    tf2onnx logged as unsupported."""
    from harmonizer_deploy.conversion.convert import DEFAULT_OPSET, tf2onnx_convert

    unsupported: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.search(r"Tensorflow op \[[^:]+: (\w+)\] is not supported", record.getMessage())
            if match:
                unsupported.append(match.group(1))

    handler = Collect(logging.ERROR)
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    try:
        proto = tf2onnx_convert(source.call, DEFAULT_OPSET)
    except Exception as exc:
        return None, [f"conversion failed: {str(exc).splitlines()[0][:160]}"]
    finally:
        logger.removeHandler(handler)
    return proto, sorted(set(unsupported))


def _check_plain(proto: Any, rows: dict[str, ScanRow], names: list[str]) -> bool:
    """Strict ONNX shape inference (it goes on past ops it does not know, unlike the checker) then the full
    check of the plain conversion; complaints are attributed to layers by node name."""
    import onnx

    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        onnx.checker.check_model(proto, full_check=True)
        return True
    except Exception as exc:
        for line in str(exc).splitlines():
            match = re.search(r"op_type:(\w+), node name: ([^)\s]+)\): (.*)", line)
            if match and "but instead is null" not in line:  # not the knock-on effect of an earlier error
                key = layer_key(match.group(2), names)
                row = rows.setdefault(key, ScanRow(layer=key))
                row.onnx_check = row.onnx_check or f"{match.group(1)}: {match.group(3)[:120]}"
        return False


def _tf2onnx_handlers() -> set[str]:
    from tf2onnx.handler import tf_op

    from harmonizer_deploy.conversion.convert import DEFAULT_OPSET

    return set(tf_op.create_mapping(DEFAULT_OPSET, []))


def _scan_tf(model: Any, registry: CustomOpRegistry, check_tvm: bool) -> ScanReport:
    from harmonizer_deploy.conversion.convert import compare_with_tensorflow
    from harmonizer_deploy.conversion.source import load_source

    source = load_source(model)
    layers = []
    if source.keras_model is not None:
        layers = [lay for lay in source.keras_model.layers if type(lay).__name__ != "InputLayer"]
    names = [lay.name for lay in layers]
    rows: dict[str, ScanRow] = {}
    for lay in layers:
        cls = type(lay).__name__
        rows[lay.name] = ScanRow(layer=lay.name, keras_class=cls, custom=is_custom_layer(lay))
    handlers = _tf2onnx_handlers()
    for node_name, op in _tf_nodes(source.call):
        if op in PLUMBING:
            continue
        row = rows.setdefault(layer_key(node_name, names), ScanRow(layer=layer_key(node_name, names)))
        if op not in row.tf_ops:
            row.tf_ops.append(op)
        if op not in handlers and op not in row.tf2onnx_missing:
            row.tf2onnx_missing.append(op)

    proto, unsupported = _plain_conversion(source)
    report = ScanReport(str(source.path), source.kind, [], tf2onnx_unsupported=unsupported)
    checker_ok = True
    if proto is not None:
        checker_ok = _check_plain(proto, rows, names)
        for node in proto.graph.node:
            key = layer_key(node.name, names)
            row = rows.setdefault(key, ScanRow(layer=key))
            name = _onnx_name(node)
            if name not in row.onnx_ops:
                row.onnx_ops.append(name)
            row.runtime_shapes |= node.op_type in SHAPE_OPS
        if check_tvm:
            for row in rows.values():
                row.tvm_missing = _tvm_missing(proto, row.onnx_ops, registry)
        if not unsupported and checker_ok:
            try:
                err = compare_with_tensorflow(source, proto.SerializeToString())
                report.verified = f"max abs err {err:.2e}" + ("" if err <= 1e-4 else " (MISMATCH)")
            except Exception as exc:
                report.verified = f"onnxruntime failed: {str(exc).splitlines()[0][:120]}"
            if check_tvm:
                report.tvm_import = _try_tvm_import(proto, registry)
    for row in rows.values():
        entry = registry.for_keras_class(row.keras_class) if row.keras_class else None
        for op in row.tf_ops:
            entry = entry or registry.for_tf_op(op)
        row.strategies = list(entry.strategies) if entry else []
        row.tf2onnx_missing = [op for op in row.tf2onnx_missing if op in unsupported] or (
            row.tf2onnx_missing if proto is None else [])
        if row.tf_ops or row.onnx_ops:
            row.verified = report.verified if report.verified != "–" else "–"
        if row.tf2onnx_missing:
            row.status = f"breaks at tf2onnx ({', '.join(row.tf2onnx_missing)})"
        elif row.onnx_check:
            row.status = f"tf2onnx output fails the ONNX checker ({row.onnx_check})"
        elif row.tvm_missing:
            row.status = f"breaks at TVM import ({', '.join(row.tvm_missing)})"
        elif row.runtime_shapes and not report.tvm_import.startswith("ok"):
            row.status = "run-time shape chain (TVM may reject it)"
        if row.breaks:
            row.fix = _fix(entry)
        elif entry:
            row.fix = f"converts as is; registry strategies also apply (default {entry.preferred})"
    if any(r.strategies for r in rows.values()):
        report.with_registry = _registry_check(model, registry, check_tvm)
        for row in rows.values():
            if row.strategies:
                row.verified = f"{row.verified}; registry: {report.with_registry['verified']}"
    report.rows = list(rows.values())
    return report


def _registry_check(model: Any, registry: CustomOpRegistry, check_tvm: bool) -> dict:
    """Convert with the registry (preferred strategies) into a temp dir: TF vs onnxruntime, then TVM import."""
    import tempfile

    import onnx

    from harmonizer_deploy.conversion.convert import convert

    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = convert(model, Path(tmp) / "model.onnx")
        except HarmonizerError as exc:
            return {"verified": f"convert fails: {exc.problem[:160]}", "strategies": {}, "tvm_import": "not tried"}
        out = {"verified": f"max abs err {result.max_abs_err:.2e}", "strategies": result.custom_ops,
               "tvm_import": "not tried"}
        if check_tvm:
            out["tvm_import"] = _try_tvm_import(onnx.load(str(result.onnx_path)), registry)
    return out
