"""Compile-time check of a model against the coverage tracker's results: no silent wrong numbers.

Why: the tracker (`harmonizer-deploy coverage`) knows which ONNX node classes TVM + the converter pack
import and compile fine but compute wrongly (category "mismatch"). Without this check a model with such a
node compiles cleanly and only `verify`, if its random inputs hit the case, would tell. Each node is put
in a *class*: op, domain, input dtype and the attributes / shapes that decide the result (Resize mode and
coordinate transformation, reductions over a zero-size dim or with empty axes, Mod fmod, ConvTranspose
output_shape/output_padding, ...). The shipped table (`coverage_classes.json`, derived from coverage.json
by `harmonizer-deploy coverage-classes`) says per class how the node-suite cases did under TVM + pack.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

TABLE_PATH = Path(__file__).with_name("coverage_classes.json")
TABLE_FORMAT = 1

KNOWN_MISMATCH = "known mismatch"
UNTESTED = "untested"
TESTED = "tested"


# ------------------------------------------------------------------------------------- node context


@dataclass
class GraphFacts:
    """What the classifier may look at besides the node: constant values, static shapes and dtypes."""

    constants: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int | None, ...] | None] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        return self.shapes.get(name)


def _dtype_name(elem_type: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "?"


def _record_vi(facts: GraphFacts, vi: onnx.ValueInfoProto) -> None:
    if not vi.type.HasField("tensor_type"):
        return
    tt = vi.type.tensor_type
    facts.dtypes[vi.name] = _dtype_name(tt.elem_type)
    if tt.HasField("shape"):
        facts.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def graph_facts(model: onnx.ModelProto) -> GraphFacts:
    """Constants (initializers, Constant nodes), shapes and dtypes after ONNX shape inference (best effort)."""
    facts = GraphFacts(opsets={("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import})
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model shape inference cannot follow still gets classified, with fewer facts
        inferred = model
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        _record_vi(facts, vi)
    for init in g.initializer:
        try:
            value = numpy_helper.to_array(init)
        except Exception:
            continue
        facts.constants[init.name] = value
        facts.shapes.setdefault(init.name, tuple(value.shape))
        facts.dtypes.setdefault(init.name, _dtype_name(init.data_type))
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    with contextlib.suppress(Exception):  # an unreadable constant is just not a known value
                        facts.constants[node.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_ints", "value_int"):
                    facts.constants[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
    return facts


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            continue
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


# ---------------------------------------------------------------------------------- class features
# Each extractor returns the features that decide the result of a node of that op. Ops without one are
# classified by op, domain and dtype alone.

Features = dict[str, Any]
Extractor = Callable[[onnx.NodeProto, dict[str, Any], GraphFacts], Features]


def _reduce(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    axes_name = _input(node, 1)
    if axes_name:
        value = facts.const(axes_name)
        axes: list[int] | None = None if value is None else [int(x) for x in np.asarray(value).reshape(-1)]
    else:
        axes = [int(x) for x in a.get("axes", [])]
    noop = int(a.get("noop_with_empty_axes", 0))
    shape = facts.shape(_input(node, 0))
    if axes is None:
        empty_axes: Any = "dynamic"
    else:
        empty_axes = not axes
    # A symbolic dim counts as non-zero (a batch of 0 is not what models are compiled for).
    zero: Any = "unknown"
    if shape is not None and axes is not None:
        rank = len(shape)
        picked = [] if (empty_axes and noop) else range(rank) if not axes else [ax % rank for ax in axes if rank]
        zero = any(shape[i] == 0 for i in picked if i < rank)
    return {"empty_axes": empty_axes, "noop_with_empty_axes": noop, "reduces_zero_size_dim": zero}


def _scales_direction(values: np.ndarray | None) -> str:
    if values is None:
        return "dynamic"
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return "none"
    down, up = bool(np.any(v < 1)), bool(np.any(v > 1))
    return "mixed" if down and up else "down" if down else "up" if up else "same"


def _resize(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    mode = a.get("mode", "nearest")
    f: Features = {
        "mode": mode,
        "coordinate_transformation_mode": a.get("coordinate_transformation_mode", "half_pixel"),
        "antialias": int(a.get("antialias", 0)),
        "exclude_outside": int(a.get("exclude_outside", 0)),
        "axes": bool(a.get("axes")),
    }
    if mode == "nearest":
        f["nearest_mode"] = a.get("nearest_mode", "round_prefer_floor")
    if mode == "cubic":
        f["cubic_coeff_a"] = round(float(a.get("cubic_coeff_a", -0.75)), 4)
    scales_name, sizes_name = _input(node, 2), _input(node, 3)
    scales = facts.const(scales_name)
    if sizes_name:
        f["by"] = "sizes"
        f["keep_aspect_ratio_policy"] = a.get("keep_aspect_ratio_policy", "stretch")
        sizes, shape = facts.const(sizes_name), facts.shape(_input(node, 0))
        ratio = None
        if sizes is not None and shape is not None and len(shape) >= sizes.size and not f["axes"]:
            dims = shape[len(shape) - sizes.size:]
            if all(d for d in dims):
                ratio = np.asarray(sizes, np.float64).reshape(-1) / np.asarray(dims, np.float64)
        f["direction"] = _scales_direction(ratio)
    else:
        f["by"] = "scales"
        f["direction"] = _scales_direction(scales)
    return f


def _mod(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"fmod": int(a.get("fmod", 0))}


def _conv_transpose(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"output_shape": bool(a.get("output_shape")), "output_padding": any(a.get("output_padding", [])),
            "auto_pad": a.get("auto_pad", "NOTSET")}


def _space_depth(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"mode": a.get("mode", "DCR")}


def _dropout(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    training: Any = False
    if _input(node, 2):
        value = facts.const(_input(node, 2))
        training = "dynamic" if value is None else bool(np.asarray(value).reshape(-1)[0])
    ratio: Any = float(a.get("ratio", 0.5))
    if _input(node, 1):
        value = facts.const(_input(node, 1))
        ratio = "dynamic" if value is None else float(np.asarray(value).reshape(-1)[0])
    return {"training_mode": training, "ratio_zero": ratio == 0.0 if ratio != "dynamic" else "dynamic",
            "mask_output": len(node.output) > 1 and bool(node.output[1])}


def _isinf(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"detect_negative": int(a.get("detect_negative", 1)), "detect_positive": int(a.get("detect_positive", 1))}


def _roi_align(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"mode": a.get("mode", "avg"),
            "coordinate_transformation_mode": a.get("coordinate_transformation_mode", "half_pixel")}


def _batch_norm(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"training_mode": int(a.get("training_mode", 0))}


def _cast(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"to": _dtype_name(int(a.get("to", 0))), "saturate": int(a.get("saturate", 1)),
            "round_mode": a.get("round_mode", "up")}


def _cast_like(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"to": facts.dtypes.get(_input(node, 1), "?"), "saturate": int(a.get("saturate", 1))}


def _second_dtype(node: onnx.NodeProto, a: dict[str, Any], facts: GraphFacts) -> Features:
    return {"dtype_1": facts.dtypes.get(_input(node, 1), "?")}


REDUCTIONS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
              "ReduceProd", "ReduceSum", "ReduceSumSquare")

EXTRACTORS: dict[str, Extractor] = {
    **dict.fromkeys(REDUCTIONS, _reduce),
    "Resize": _resize,
    "Mod": _mod,
    "ConvTranspose": _conv_transpose,
    "SpaceToDepth": _space_depth,
    "DepthToSpace": _space_depth,
    "Dropout": _dropout,
    "IsInf": _isinf,
    "RoiAlign": _roi_align,
    "BatchNormalization": _batch_norm,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Pow": _second_dtype,
}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def node_class(node: onnx.NodeProto, facts: GraphFacts) -> str:
    """The class key of `node`: `Op[domain]/dtype{feature=value,...}` (features sorted by name)."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    op = f"{domain}::{node.op_type}" if domain else node.op_type
    dtype = facts.dtypes.get(_input(node, 0), "?")
    extractor = EXTRACTORS.get(node.op_type) if not domain else None
    features = extractor(node, _attrs(node), facts) if extractor else {}
    inner = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(features.items()))
    return f"{op}/{dtype}" + (f"{{{inner}}}" if inner else "")


def op_version(node: onnx.NodeProto, facts: GraphFacts) -> int | None:
    """The since-version of the node's op schema at the model's opset (None: not an ONNX op)."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    try:
        return int(onnx.defs.get_schema(node.op_type, facts.opsets.get(domain, 1), domain).since_version)
    except Exception:
        return None


# ------------------------------------------------------------------------------------------ the table


@cache
def _load_table(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_table(path: Path | None = None) -> dict[str, Any]:
    """The shipped class table ({"meta": ..., "classes": {key: {...}}})."""
    return _load_table(str(path or TABLE_PATH))


@dataclass
class NodeFinding:
    node: str
    op: str
    klass: str
    status: str  # KNOWN_MISMATCH / UNTESTED / TESTED
    case: str = ""  # the coverage case that shows the mismatch
    detail: str = ""  # what differed in that case
    cases: str = ""  # "k of n" cases of the class that mismatch

    def line(self) -> str:
        if self.status == KNOWN_MISMATCH:
            return (f"node {self.node!r} ({self.op}) is in known-mismatch class {self.klass}: coverage case "
                    f"{self.case} ({self.cases} cases mismatch; {self.detail})")
        if self.status == UNTESTED:
            return f"node {self.node!r} ({self.op}): class {self.klass} is not covered by any ONNX node test case"
        return f"node {self.node!r} ({self.op}): class {self.klass} passes its coverage cases"


@dataclass
class CheckReport:
    findings: list[NodeFinding]
    table: str  # the table's source description

    @property
    def mismatches(self) -> list[NodeFinding]:
        return [f for f in self.findings if f.status == KNOWN_MISMATCH]

    @property
    def untested(self) -> list[NodeFinding]:
        return [f for f in self.findings if f.status == UNTESTED]

    def to_dict(self, allowed: bool = False) -> dict[str, Any]:
        """The manifest record: counts, every known mismatch and untested class (tested ones are counted)."""
        return {
            "table": self.table,
            "nodes": len(self.findings),
            "tested": sum(1 for f in self.findings if f.status == TESTED),
            "known_mismatch": [asdict(f) for f in self.mismatches],
            "untested": sorted({f.klass for f in self.untested}),
            "allowed_known_mismatch": allowed,
        }


def _walk(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                nodes += _walk(a.g)
            for sub in a.graphs:
                nodes += _walk(sub)
    return nodes


def classify(node: onnx.NodeProto, facts: GraphFacts, classes: Mapping[str, Any], index: int = 0) -> NodeFinding:
    klass = node_class(node, facts)
    name = node.name or f"{node.op_type}_{index}"
    entry = classes.get(klass)
    if entry is None:
        return NodeFinding(name, node.op_type, klass, UNTESTED)
    if entry.get("mismatch"):
        first = entry["mismatch"][0]
        return NodeFinding(name, node.op_type, klass, KNOWN_MISMATCH, first["case"], first["detail"],
                           f"{len(entry['mismatch'])} of {entry['cases']}")
    return NodeFinding(name, node.op_type, klass, TESTED)


def check_model(model: onnx.ModelProto, table: dict[str, Any] | None = None) -> CheckReport:
    """Classify every node (subgraphs included; Constant nodes are data, not computation)."""
    table = table if table is not None else load_table()
    facts = graph_facts(model)
    classes = table.get("classes", {})
    findings = [classify(n, facts, classes, i) for i, n in enumerate(_walk(model.graph))
                if not (n.op_type == "Constant" and n.domain in ("", "ai.onnx"))]
    meta = table.get("meta", {})
    source = f"{meta.get('source', '?')} ({meta.get('versions', {}).get('apache-tvm', '?')})"
    return CheckReport(findings, source)


def enforce(model: onnx.ModelProto, allow_known_mismatch: bool = False) -> dict[str, Any]:
    """The compile-time check: refuse (exit 2) a node in a known-mismatch class unless allowed.

    Returns the manifest record. Nodes of custom domains are the custom-op registry's business (its
    converters are checked by their own tests), so only default-domain nodes are classified.
    """
    from harmonizer_deploy.core.errors import HarmonizerError

    default = onnx.ModelProto()
    default.CopyFrom(model)
    report = check_model(default)
    report.findings = [f for f in report.findings if "::" not in f.klass]
    bad = report.mismatches
    if bad and not allow_known_mismatch:
        more = f" (and {len(bad) - 1} more node(s): {', '.join(f.node for f in bad[1:4])}…)" if len(bad) > 1 else ""
        raise HarmonizerError(
            bad[0].line() + more,
            "TVM + the converter pack computes this class wrongly without an error; change the node (attributes, "
            "dtype), or compile with --allow-known-mismatch and check the artifact with `verify`",
        )
    return report.to_dict(allowed=bool(bad))
