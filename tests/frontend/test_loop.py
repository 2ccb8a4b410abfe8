"""ONNX Loop unrolling (frontend/loop.py): exactly as many iterations as the loop runs, the same numbers as
onnxruntime's Loop, and a loop whose iterations are only known at run time left alone with the reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.frontend.loop import MAX_ITERATIONS, unroll_loops


def _body(stop_after: int | None) -> onnx.GraphProto:
    """acc' = acc * 0.5 + x[i] (x read from the outer scope), scan out acc'; cond' = i + 1 < stop_after."""
    nodes = [
        helper.make_node("Gather", ["x", "i"], ["row"], axis=0),
        helper.make_node("Mul", ["acc", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "row"], ["acc_out"]),
        helper.make_node("Identity", ["acc_out"], ["scan"]),
    ]
    if stop_after is None:
        nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))
    else:
        nodes += [helper.make_node("Add", ["i", "one"], ["next"]),
                  helper.make_node("Less", ["next", "stop"], ["cond_out"])]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array(stop_after or 0, np.int64), "stop")]
    return helper.make_graph(
        nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("scan", TensorProto.FLOAT, [3])],
        inits)


def _model(trips: int | None, stop_after: int | None = None) -> onnx.ModelProto:
    """A Loop over x [6, 3]: a constant trip count `trips`, or (None) one fed as a graph input."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3])]
    inits = [numpy_helper.from_array(np.array(True), "cond0"), numpy_helper.from_array(np.zeros(3, np.float32), "acc0")]
    if trips is None:
        inputs.append(helper.make_tensor_value_info("trips", TensorProto.INT64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(trips, np.int64), "trips"))
    loop = helper.make_node("Loop", ["trips", "cond0", "acc0"], ["final", "stacked"], name="the_loop",
                            body=_body(stop_after))
    graph = helper.make_graph(
        [loop, helper.make_node("Relu", ["stacked"], ["y"])], "g", inputs,
        [helper.make_tensor_value_info("final", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["steps", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> list[np.ndarray]:
    return ort_session(model).run(None, feeds)


X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)


def test_constant_trip_count_unrolls_to_the_same_results():
    model = _model(trips=5)
    unrolled, report = unroll_loops(model)
    assert report.unrolled == {"the_loop": 5} and not report.left
    assert "Loop" not in {n.op_type for n in unrolled.graph.node}
    onnx.checker.check_model(unrolled)
    for want, got in zip(_run(model, x=X), _run(unrolled, x=X), strict=True):
        assert want.shape == got.shape and np.array_equal(want, got)
    assert _run(unrolled, x=X)[1].shape == (5, 3)


def test_condition_that_turns_off_unrolls_only_the_iterations_that_run():
    model = _model(trips=2**40, stop_after=3)  # a while loop: the trip count is just a bound
    unrolled, report = unroll_loops(model)
    assert report.unrolled == {"the_loop": 3}
    final, stacked = _run(unrolled, x=X)
    assert stacked.shape == (3, 3)
    for want, got in zip(_run(model, x=X), (final, stacked), strict=True):
        assert want.shape == got.shape and np.array_equal(want, got)
    # the condition chains are gone: nothing but the recurrence's own ops and the stacking remain
    assert {n.op_type for n in unrolled.graph.node} <= {"Gather", "Mul", "Add", "Identity", "Unsqueeze", "Concat",
                                                         "Relu"}


def test_run_time_trip_count_is_left_with_the_reason():
    model = _model(trips=None)
    same, report = unroll_loops(model)
    assert same is model and not report.unrolled
    assert report.left == {"the_loop": "its trip count 'trips' is computed at run time"}


def test_a_condition_that_never_turns_off_is_left():
    model = _model(trips=2**40, stop_after=2**41)
    same, report = unroll_loops(model)
    assert same is model and f"more than {MAX_ITERATIONS} iterations" in report.left["the_loop"]


def test_unrolled_loop_runs_in_tvm_through_the_pack_prepass():
    """Compile path: TVM imports the unrolled loop (it has no Loop converter) and computes the same numbers."""
    pytest.importorskip("tvm")
    from harmonizer_deploy.coverage import tracker as cov

    model = _model(trips=4)
    expected = _run(model, x=X)
    stages: list[str] = []
    cov.run_tvm_pack(cov.Case("loop", "Loop", model, [X], expected, 1e-5, 1e-6), stages.append)  # raises on a mismatch
    assert stages[-1] == "compare"
