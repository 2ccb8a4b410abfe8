"""Per-model section of the coverage report: every op of one ONNX model through TVM, with status per stage.

Why: the node tests say what TVM does with an op in isolation; this says what it does with the ops as a
real model uses them (shapes, attributes, dtypes). Pluggable: give it any ONNX path.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.coverage.tracker import COMPILE_ERROR, IMPORT_ERROR, PASS, UNSUPPORTED, Case, run_coverage

_STAGES = ("import", "compile", "verify")
_FAILED_AT = {UNSUPPORTED: "import", IMPORT_ERROR: "import", COMPILE_ERROR: "compile"}


def _random_input(vi: onnx.ValueInfoProto, rng: np.random.Generator) -> np.ndarray:
    t = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 4, shape).astype(dtype)


def _expected(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[Any]:
    from harmonizer_deploy.core.onnxruntime import ort_session

    sess = ort_session(model)
    feeds = {vi.name: x for vi, x in zip(model.graph.input, inputs, strict=True)}
    return sess.run(None, feeds)


def _single_node_models(model: onnx.ModelProto) -> list[tuple[str, onnx.ModelProto]]:
    """Each node as its own model, its non-constant inputs as graph inputs (shapes from inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    inits = {t.name: t for t in inferred.graph.initializer}
    out = []
    for i, node in enumerate(inferred.graph.node):
        ins = [known[n] for n in node.input if n and n not in inits]
        if any(n not in known for n in node.output) or len(ins) < sum(1 for n in node.input if n and n not in inits):
            continue
        graph = onnx.helper.make_graph(
            [node],
            f"node{i}",
            ins,
            [known[n] for n in node.output],
            [inits[n] for n in node.input if n in inits],
        )
        sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        out.append((node.op_type, sub))
    return out


def model_coverage(path: Path, jobs: int | None = None, timeout_s: float = 120.0, seed: int = 0) -> dict[str, Any]:
    """Import/compile/verify status of every op of the model at `path`, plus the whole model."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise HarmonizerError(f"cannot read ONNX model {path}: {reason(exc)}", "pass a valid .onnx file") from exc
    rng = np.random.default_rng(seed)
    cases, ops = [], []
    for idx, (op, sub) in enumerate([("<whole model>", model), *_single_node_models(model)]):
        inputs = [_random_input(vi, rng) for vi in sub.graph.input]
        cases.append(Case(f"{path.stem}:{idx:04d}:{op}", op, sub, inputs, _expected(sub, inputs), 1e-4, 1e-5))
        ops.append(op)
    result = run_coverage(cases=cases, jobs=jobs, timeout_s=timeout_s, variants=("tvm", "tvm_pack"))
    rows: dict[str, dict[str, Any]] = {}
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case, op in zip(cases, ops, strict=True):
        grouped[op].append(result.cases[case.name]["tvm_pack"])
    whole = grouped.pop("<whole model>")[0]
    for op, results in sorted(grouped.items()):
        row: dict[str, Any] = {"nodes": len(results), "first_error": ""}
        for stage in _STAGES:
            row[stage] = "ok"
        for r in results:
            if r["status"] == PASS:
                continue
            failed = _FAILED_AT.get(r["status"], "verify")
            for stage in _STAGES[_STAGES.index(failed) :]:
                row[stage] = "FAIL" if stage == failed else "-"
            row["first_error"] = row["first_error"] or f"{r['status']}: {r['detail']}"[:160]
        rows[op] = row
    return {
        "path": str(path),
        "whole": "pass" if whole["status"] == PASS else f"{whole['status']}: {whole['detail']}",
        "ops": rows,
    }
