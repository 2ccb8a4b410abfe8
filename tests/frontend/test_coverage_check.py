"""The compile-time coverage check: node classes (op, dtype, deciding attributes and shapes), the shipped table
derived from coverage.json, and the classification of known-mismatch / untested / tested nodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harmonizer_deploy.frontend import coverage_check as cc

REPO = Path(__file__).resolve().parents[2]


def resize_model(mode: str = "cubic", ctm: str = "align_corners", scale: float = 0.6) -> onnx.ModelProto:
    """x [1, 1, 4, 4] → Resize by constant scales (a node named 'shrink')."""
    out = int(4 * scale)
    scales = numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="shrink", mode=mode,
                            coordinate_transformation_mode=ctm)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, out, out])], [scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def reduce_model(shape: list[int], axes: list[int], op: str = "ReduceSum", opset: int = 13,
                 dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x → op over constant `axes` (keepdims) → y, a node named 'total'."""
    out = [1 if i in axes else d for i, d in enumerate(shape)]
    init = numpy_helper.from_array(np.array(axes, np.int64), "axes")
    node = helper.make_node(op, ["x", "axes"], ["y"], name="total", keepdims=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, out)], [init])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _only(model: onnx.ModelProto) -> str:
    return cc.node_class(model.graph.node[0], cc.graph_facts(model))


def test_resize_class_has_the_attributes_and_direction_that_decide_it():
    key = _only(resize_model())
    assert key.startswith("Resize/float32{")
    for part in ("mode=cubic", "coordinate_transformation_mode=align_corners", "direction=down", "by=scales",
                 "cubic_coeff_a=-0.75"):
        assert part in key
    assert "direction=up" in _only(resize_model(scale=2.0))
    assert "nearest_mode=round_prefer_floor" in _only(resize_model(mode="nearest", ctm="half_pixel"))


def test_reduction_class_sees_a_zero_size_reduced_dim_and_empty_axes():
    assert "reduces_zero_size_dim=1" in _only(reduce_model([2, 0, 4], [1]))
    assert "reduces_zero_size_dim=0" in _only(reduce_model([2, 0, 4], [2]))  # the zero dim is kept, not reduced
    assert "empty_axes=1" in _only(reduce_model([2, 3], []))
    symbolic = reduce_model([2, 3], [0])
    symbolic.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert "reduces_zero_size_dim=0" in _only(symbolic)  # a symbolic dim is taken as non-zero


def test_mod_and_conv_transpose_classes():
    mod = helper.make_node("Mod", ["a", "b"], ["c"], fmod=1)
    facts = cc.GraphFacts(dtypes={"a": "float32"})
    assert cc.node_class(mod, facts) == "Mod/float32{fmod=1}"
    ct = helper.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[10, 8])
    assert "output_shape=1" in cc.node_class(ct, cc.GraphFacts(dtypes={"x": "float32"}))


def test_known_mismatch_untested_and_tested_nodes():
    table = {"meta": {}, "classes": {
        "Relu/float32": {"cases": 1, "pass": 1},
        "Mod/float32{fmod=0}": {"cases": 2, "pass": 1, "mismatch": [{"case": "test_mod_x", "detail": "NaN"}]},
    }}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Mod", ["r", "k"], ["m"], name="mod"),
             helper.make_node("Relu", ["m"], ["y"], name="relu64")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
                              [numpy_helper.from_array(np.array([2.0, 2.0, 2.0], np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.graph.node[2].input[0] = "x64"
    model.graph.input.append(helper.make_tensor_value_info("x64", TensorProto.DOUBLE, [3]))
    report = cc.check_model(model, table)
    status = {f.node: f.status for f in report.findings}
    assert status == {"relu": cc.TESTED, "mod": cc.KNOWN_MISMATCH, "relu64": cc.UNTESTED}
    line = report.mismatches[0].line()
    assert "'mod'" in line and "Mod/float32{fmod=0}" in line and "test_mod_x" in line and "1 of 2" in line
    assert report.to_dict()["untested"] == ["Relu/float64"]


def test_shipped_table_is_derived_from_the_committed_coverage_json():
    """The table compile reads must be regenerated (`coverage-classes`) whenever coverage.json changes."""
    from harmonizer_deploy.coverage.classes import build_table

    report = json.loads((REPO / "coverage.json").read_text())
    rebuilt = build_table(report, "coverage.json")
    shipped = cc.load_table()
    assert rebuilt["classes"] == shipped["classes"]
    # every silent mismatch of a node case under TVM + pack is in some known-mismatch class
    named = {m["case"] for c in shipped["classes"].values() for m in c.get("mismatch", [])}
    silent = {k for k, v in report["cases"].items() if not v["expanded"] and v["tvm_pack"]["status"] == "mismatch"}
    assert silent == named


@pytest.mark.parametrize("shape,axes", [([2, 0, 4], [1]), ([2, 3, 4], [1])])
def test_reduction_classes_pass_after_the_pack_fix(shape, axes):
    """The pack fixed the zero-size reductions: the shipped table has no mismatch left for them."""
    report = cc.check_model(reduce_model(shape, axes))
    assert [f.status for f in report.findings] == [cc.TESTED]
