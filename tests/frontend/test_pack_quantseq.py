"""The quantized-op converters (frontend/pack_quantseq.py) and the static-sequence / Scan pre-passes: each
builds a tiny ONNX model, imports it through the pack, compiles it for llvm, runs it on the Relax VM and
compares with onnxruntime (exactly, for integer outputs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.coverage import tracker as cov
from harmonizer_deploy.frontend import pack_quantseq
from harmonizer_deploy.frontend.loop import unroll_loops
from harmonizer_deploy.frontend.pack import CONVERTERS
from harmonizer_deploy.frontend.sequence import expand_static_sequences, sequence_inputs_as_tensors


def _model(nodes: list, inputs: list, outputs: list, inits: list, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    return ort_session(model.SerializeToString()).run(None, feeds)


def _tvm(model: onnx.ModelProto, inputs: list, converters: dict | None = CONVERTERS) -> list:
    return cov.run_tvm_model(model, inputs, lambda stage: None, converters)


def _qlinear_matmul_model(dtype: int, m: int, k: int, n: int, rng: np.random.Generator) -> onnx.ModelProto:
    np_t = helper.tensor_dtype_to_np_dtype(dtype)
    info = np.iinfo(np_t)
    b = rng.integers(info.min, info.max + 1, size=(k, n)).astype(np_t)
    inits = [
        numpy_helper.from_array(np.array(0.0173, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(3, np_t), "a_zp"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(0.0091, np.float32), "b_scale"),
        numpy_helper.from_array(np.array(-5 if info.min < 0 else 130, np_t), "b_zp"),
        numpy_helper.from_array(np.array(0.0417, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(1 if info.min < 0 else 120, np_t), "y_zp"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"],
                            ["y"])
    return _model([node], [helper.make_tensor_value_info("a", dtype, [m, k])],
                  [helper.make_tensor_value_info("y", dtype, [m, n])], inits, 13)


@pytest.mark.parametrize("dtype", [TensorProto.INT8, TensorProto.UINT8])
def test_qlinear_matmul_matches_onnxruntime_exactly(dtype):
    rng = np.random.default_rng(0)
    model = _qlinear_matmul_model(dtype, 5, 16, 7, rng)
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(dtype))
    a = rng.integers(info.min, info.max + 1, size=(5, 16)).astype(info.dtype)
    expected = _ort(model, {"a": a})[0]
    got = _tvm(model, [a])[0]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) > 10  # not a saturated constant: the requantization is really exercised


def _conv_model(op: str, rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray]:
    """A 2-group conv with padding and stride over uint8 x and int8 w (QLinearConv: per-output-channel scales).

    onnxruntime refuses a per-channel weight zero point in ConvInteger, so that one is scalar here."""
    x = rng.integers(0, 256, size=(1, 4, 6, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, size=(6, 2, 3, 3)).astype(np.int8)
    w_zp = np.array(-2, np.int8) if op == "ConvInteger" else np.zeros(6, np.int8)
    attrs = {"pads": [1, 0, 1, 2], "strides": [2, 1], "group": 2}
    if op == "ConvInteger":
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(7, np.uint8), "x_zp"),
                 numpy_helper.from_array(w_zp, "w_zp")]
        node = helper.make_node(op, ["x", "w", "x_zp", "w_zp"], ["y"], **attrs)
        out_type = TensorProto.INT32
    else:
        inits = [
            numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(7, np.uint8), "x_zp"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.linspace(0.001, 0.004, 6).astype(np.float32), "w_scale"),
            numpy_helper.from_array(w_zp, "w_zp"),
            numpy_helper.from_array(np.array(0.37, np.float32), "y_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "y_zp"),
            numpy_helper.from_array(rng.integers(-2000, 2000, size=6).astype(np.int32), "bias"),
        ]
        node = helper.make_node(op, ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "bias"],
                                ["y"], **attrs)
        out_type = TensorProto.UINT8
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 6, 6])],
                   [helper.make_tensor_value_info("y", out_type, [1, 6, 3, 6])], inits, 13)
    return model, x


@pytest.mark.parametrize("op", ["QLinearConv", "ConvInteger"])
def test_integer_convs_match_onnxruntime_exactly(op):
    model, x = _conv_model(op, np.random.default_rng(1))
    expected = _ort(model, {"x": x})[0]
    got = _tvm(model, [x])[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape == (1, 6, 3, 6)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) > 10


@pytest.mark.parametrize("op", ["QLinearMatMul", "QLinearConv", "ConvInteger"])
def test_tvm_alone_cannot_import_the_quantized_ops(op):
    rng = np.random.default_rng(2)
    model = _qlinear_matmul_model(TensorProto.INT8, 2, 4, 3, rng) if op == "QLinearMatMul" else _conv_model(op, rng)[0]
    others = {k: v for k, v in CONVERTERS.items() if k not in pack_quantseq.CONVERTERS}
    with pytest.raises(cov.StageError, match="not supported"):
        _tvm(model, [np.zeros(tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim),
                              helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type))],
             others)


def _scan_model(length: int | str) -> onnx.ModelProto:
    """Scan-16 over x [2, L, 3] along axis 1, read backwards; state acc' = acc * 0.5 + x_t; scan outputs acc'
    stacked along axis 0 reversed and x_t * 2 stacked along axis -1."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["acc", "half"], ["scaled"]),
         helper.make_node("Add", ["scaled", "xt"], ["acc_out"]),
         helper.make_node("Identity", ["acc_out"], ["seen"]),
         helper.make_node("Add", ["xt", "xt"], ["doubled"])],
        "body",
        [helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("xt", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("seen", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    scan = helper.make_node("Scan", ["acc0", "x"], ["final", "accs", "doubles"], name="the_scan", body=body,
                            num_scan_inputs=1, scan_input_axes=[1], scan_input_directions=[1],
                            scan_output_axes=[0, -1], scan_output_directions=[1, 0])
    return _model([scan], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, length, 3])],
                  [helper.make_tensor_value_info("final", TensorProto.FLOAT, [2, 3]),
                   helper.make_tensor_value_info("accs", TensorProto.FLOAT, [length, 2, 3]),
                   helper.make_tensor_value_info("doubles", TensorProto.FLOAT, [2, 3, length])],
                  [numpy_helper.from_array(np.ones((2, 3), np.float32), "acc0")], 16)


def test_static_scan_is_unrolled_with_its_axes_and_directions():
    model = _scan_model(4)
    unrolled, report = unroll_loops(model)
    assert report.unrolled == {"the_scan": 4} and "Scan" not in {n.op_type for n in unrolled.graph.node}
    onnx.checker.check_model(unrolled)
    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    expected = _ort(model, {"x": x})
    got = _tvm(unrolled, [x])
    assert len(got) == 3
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_scan_of_run_time_length_is_left_with_the_reason():
    model = _scan_model("steps")
    same, report = unroll_loops(model)
    assert same is model and "the_scan" in report.left and "not known before run time" in report.left["the_scan"]


def _sequence_map_model() -> onnx.ModelProto:
    """A sequence input xs; ys = SequenceMap(xs, w) with body (x * w, ReduceSum(x)); ys gets w inserted at the
    front (a 1-element position tensor, as exporters write it); outputs: ys, the sums concatenated, len(ys)."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["x", "w_in"], ["prod"]),
         helper.make_node("ReduceSum", ["x"], ["total"], keepdims=1)],
        "body",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [1])])
    seq_type = helper.make_tensor_sequence_value_info
    nodes = [
        helper.make_node("SequenceMap", ["xs", "w"], ["prods", "totals"], body=body),
        helper.make_node("SequenceInsert", ["prods", "w", "front"], ["ys"]),
        helper.make_node("ConcatFromSequence", ["totals"], ["sums"], axis=0),
        helper.make_node("SequenceLength", ["ys"], ["count"]),
    ]
    return _model(nodes, [seq_type("xs", TensorProto.FLOAT, None)],
                  [seq_type("ys", TensorProto.FLOAT, None),
                   helper.make_tensor_value_info("sums", TensorProto.FLOAT, [None]),
                   helper.make_tensor_value_info("count", TensorProto.INT64, [])],
                  [numpy_helper.from_array(np.array([1.5], np.float32), "w"),
                   numpy_helper.from_array(np.array([0], np.int64), "front")], 17)


def test_static_sequences_through_sequence_map_insert_and_length():
    model = _sequence_map_model()
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(n).astype(np.float32) for n in (3, 5, 2)]
    ys, sums, count = _ort(model, {"xs": xs})
    static, inputs = sequence_inputs_as_tensors(model, [xs])
    assert [vi.name for vi in static.graph.input] == ["xs__0", "xs__1", "xs__2"]
    with pytest.raises(cov.StageError, match="SequenceMap"):  # TVM alone has no SequenceMap
        _tvm(static, inputs)
    expanded, rewritten = expand_static_sequences(static)
    assert rewritten == 3  # SequenceMap, SequenceInsert, SequenceLength
    assert not {"SequenceMap", "SequenceInsert", "SequenceLength"} & {n.op_type for n in expanded.graph.node}
    got_ys, got_sums, got_count = _tvm(expanded, inputs)
    assert len(got_ys) == len(ys) == 4
    for g, e in zip([*got_ys, got_sums, got_count], [*ys, sums, count], strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_sequence_of_run_time_position_is_left_alone():
    model = _sequence_map_model()
    model.graph.initializer.pop()  # "front" becomes a graph input: its value is only known at run time
    model.graph.input.append(helper.make_tensor_value_info("front", TensorProto.INT64, [1]))
    static, _ = sequence_inputs_as_tensors(model, [[np.zeros(2, np.float32)], np.array([0])])
    expanded, _ = expand_static_sequences(static)
    ops = [n.op_type for n in expanded.graph.node]
    assert "SequenceInsert" in ops and "SequenceMap" not in ops  # what follows the insert is not static
    assert "SequenceLength" in ops


def _loop_building_a_sequence() -> onnx.ModelProto:
    """A Loop of 4 iterations carrying a sequence: it appends Unsqueeze(x * i, axes=<0-d constant 0>) each time;
    the result is ConcatFromSequence'd. TVM alone has neither Loop nor a scalar-axes Unsqueeze."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "fi"], ["scaled"]),
         helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array(0, np.int64))),
         helper.make_node("Unsqueeze", ["scaled", "axes"], ["row"]),
         helper.make_node("SequenceInsert", ["seq", "row"], ["seq_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_sequence_value_info("seq_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("SequenceEmpty", [], ["empty"], dtype=TensorProto.FLOAT),
             helper.make_node("Loop", ["trips", "", "empty"], ["rows"], body=body, name="the_loop"),
             helper.make_node("ConcatFromSequence", ["rows"], ["y"], axis=0)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
                  [numpy_helper.from_array(np.array(4, np.int64), "trips")], 13)


def test_loop_carrying_a_sequence_with_scalar_axes_unsqueeze():
    model = _loop_building_a_sequence()
    x = np.array([1.0, -2.0, 0.5], np.float32)
    expected = _ort(model, {"x": x})[0]
    prepared = cov._pack_prepass(model)  # the same pre-passes compile runs (fold, sequences, unroll)
    assert {"Loop", "SequenceInsert"}.isdisjoint(n.op_type for n in prepared.graph.node)
    np.testing.assert_array_equal(_tvm(prepared, [x])[0], expected)
    without = {k: v for k, v in CONVERTERS.items() if k != ("", "Unsqueeze")}
    with pytest.raises(cov.StageError, match="not iterable"):  # TVM's own Unsqueeze on a 0-d axes
        _tvm(prepared, [x], without)


def test_compile_prepare_resolves_the_same_sequences_and_loops():
    from harmonizer_deploy.custom_ops.tvm_prepare import prepare_for_tvm

    prepared, report = prepare_for_tvm(_loop_building_a_sequence())
    assert report.unrolled_loops == {"the_loop": 4}
    assert {"Loop", "SequenceInsert"}.isdisjoint(n.op_type for n in prepared.graph.node)


def _loop_with_if(static: bool) -> onnx.ModelProto:
    """acc' = (i == 0 ? x : acc * 2 + x) for 3 iterations; with static=False the If tests a graph input instead."""
    then_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["first"])], "then", [],
                                    [helper.make_tensor_value_info("first", TensorProto.FLOAT, [2])])
    else_branch = helper.make_graph([helper.make_node("Add", ["acc", "acc"], ["twice"]),
                                     helper.make_node("Add", ["twice", "x"], ["later"])], "else", [],
                                    [helper.make_tensor_value_info("later", TensorProto.FLOAT, [2])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Equal", ["i", "zero"], ["is_first"]) if static else
         helper.make_node("Identity", ["flag"], ["is_first"]),
         helper.make_node("If", ["is_first"], ["acc_out"], then_branch=then_branch, else_branch=else_branch)],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    if not static:
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    loop = helper.make_node("Loop", ["trips", "", "acc0"], ["y"], body=body, name="the_loop")
    return _model([loop], inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                  [numpy_helper.from_array(np.array(3, np.int64), "trips"),
                   numpy_helper.from_array(np.array(0, np.int64), "zero"),
                   numpy_helper.from_array(np.zeros(2, np.float32), "acc0")], 13)


def test_if_with_a_static_condition_inside_a_loop_is_inlined():
    model = _loop_with_if(static=True)
    x = np.array([1.0, -3.0], np.float32)
    unrolled, report = unroll_loops(model)
    assert report.unrolled == {"the_loop": 3} and "If" not in {n.op_type for n in unrolled.graph.node}
    np.testing.assert_array_equal(_tvm(unrolled, [x])[0], _ort(model, {"x": x})[0])
    dynamic = _loop_with_if(static=False)
    same, report = unroll_loops(dynamic)
    assert same is dynamic and "computed at run time" in report.left["the_loop"]
