"""The cast group of the converter pack (frontend/pack_cast.py): tiny ONNX models through TVM with the pack,
compiled for llvm and run on the Relax VM, against the ONNX reference implementation (onnxruntime cannot run
every float8 cast). Each test also shows TVM's own converter failing the same model, so it checks the pack."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

pytest.importorskip("tvm")

from harmonizer_deploy.coverage import tracker as cov
from harmonizer_deploy.frontend.pack import CONVERTERS

FLOAT8 = {
    TensorProto.FLOAT8E4M3FN: "e4m3fn",
    TensorProto.FLOAT8E4M3FNUZ: "e4m3fnuz",
    TensorProto.FLOAT8E5M2: "e5m2",
    TensorProto.FLOAT8E5M2FNUZ: "e5m2fnuz",
}


def _model(nodes: list, inputs: list, outputs: list, opset: int = 21, inits: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, Any], pack: bool = True) -> list[Any]:
    """Import (with or without the pack), compile for llvm, run on the Relax VM."""
    names = [i.name for i in model.graph.input]
    return cov.run_tvm_model(model, [feeds[n] for n in names], lambda stage: None, CONVERTERS if pack else None)


def _reference(model: onnx.ModelProto, feeds: dict[str, Any]) -> list[Any]:
    return list(ReferenceEvaluator(model).run(None, feeds))


def _mismatch(got: list[Any], expected: list[Any]) -> str | None:
    return cov.compare_outputs(got, expected, rtol=0.0, atol=0.0)


def _encode_inputs() -> np.ndarray:
    """Every float8 value, the midpoints between neighbours (ties) and just either side, out of range, inf, NaN."""
    values = [np.arange(256, dtype=np.uint8).view(np.dtype(helper.tensor_dtype_to_np_dtype(t))).astype(np.float64)
              for t in FLOAT8]
    grid = np.unique(np.concatenate([v[np.isfinite(v)] for v in values]))
    mids = (grid[1:] + grid[:-1]) / 2
    around = np.concatenate([np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                             np.nextafter(mids.astype(np.float32), np.float32(-np.inf))])
    extra = np.array([0.0, -0.0, 1e-9, -1e-9, 1e6, -1e6, 240.0, 250.0, 448.0, 464.0, 480.0, 57344.0, 61440.0,
                      65536.0, np.inf, -np.inf, np.nan])
    return np.concatenate([grid, mids, around, extra]).astype(np.float32)


@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_float8_rounds_like_onnx(saturate):
    x = _encode_inputs()
    nodes = [helper.make_node("Cast", ["x"], [name], to=t, saturate=saturate) for t, name in FLOAT8.items()]
    outs = [helper.make_tensor_value_info(name, t, [len(x)]) for t, name in FLOAT8.items()]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])], outs)
    expected = _reference(model, {"x": x})
    assert _mismatch(_run(model, {"x": x}), expected) is None
    assert _mismatch(_run(model, {"x": x}, pack=False), expected) is not None  # TVM's own cast gets it wrong


def test_cast_from_float8_decodes_every_code():
    codes = np.arange(256, dtype=np.uint8)
    nodes, ins, outs, feeds = [], [], [], {}
    for t, name in FLOAT8.items():
        feeds[name] = codes.view(np.dtype(helper.tensor_dtype_to_np_dtype(t)))
        ins.append(helper.make_tensor_value_info(name, t, [256]))
        for to, suffix in ((TensorProto.FLOAT, "f32"), (TensorProto.FLOAT16, "f16")):
            nodes.append(helper.make_node("Cast", [name], [f"{name}_{suffix}"], to=to))
            outs.append(helper.make_tensor_value_info(f"{name}_{suffix}", to, [256]))
    model = _model(nodes, ins, outs)
    expected = _reference(model, feeds)
    assert _mismatch(_run(model, feeds), expected) is None
    assert _mismatch(_run(model, feeds, pack=False), expected) is not None


def test_castlike_to_float8_fnuz():
    x = np.array([0.3, -0.47, 6e4, -1e-7, 240.0, 250.0, np.nan, 0.0], dtype=np.float16)
    like = helper.make_tensor("like", TensorProto.FLOAT8E4M3FNUZ, [1], [0.0])
    model = _model(
        [helper.make_node("CastLike", ["x", "like"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [len(x)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FNUZ, [len(x)])],
        inits=[like],
    )
    expected = _reference(model, {"x": x})
    assert _mismatch(_run(model, {"x": x}), expected) is None
    assert _mismatch(_run(model, {"x": x}, pack=False), expected) is not None


def test_bitcast_reinterprets_bits():
    rng = np.random.default_rng(0)
    feeds = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f64": np.array([1.5, -0.0, np.inf], dtype=np.float64),
        "u16": np.array([0, 1, 65535, 32768], dtype=np.uint16),
        "b": np.array([True, False, True], dtype=np.bool_),
    }
    pairs = [("f32", TensorProto.FLOAT, TensorProto.INT32), ("f64", TensorProto.DOUBLE, TensorProto.INT64),
             ("u16", TensorProto.UINT16, TensorProto.FLOAT16), ("b", TensorProto.BOOL, TensorProto.UINT8)]
    nodes = [helper.make_node("BitCast", [name], [f"{name}_out"], to=to) for name, _src, to in pairs]
    ins = [helper.make_tensor_value_info(name, src, list(feeds[name].shape)) for name, src, _to in pairs]
    outs = [helper.make_tensor_value_info(f"{name}_out", to, list(feeds[name].shape)) for name, _src, to in pairs]
    model = _model(nodes, ins, outs, opset=26)
    model.ir_version = 13
    got = _run(model, feeds)
    expected = [feeds[name].view(np.dtype(helper.tensor_dtype_to_np_dtype(to))) for name, _src, to in pairs]
    assert _mismatch(got, expected) is None
    with pytest.raises(cov.StageError, match="BitCast"):  # TVM has no BitCast converter
        _run(model, feeds, pack=False)


def test_eyelike_with_another_dtype():
    x = np.zeros((3, 4), dtype=np.int32)
    model = _model(
        [helper.make_node("EyeLike", ["x"], ["y"], dtype=TensorProto.DOUBLE, k=1)],
        [helper.make_tensor_value_info("x", TensorProto.INT32, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3, 4])],
    )
    assert _mismatch(_run(model, {"x": x}), [np.eye(3, 4, k=1, dtype=np.float64)]) is None
    with pytest.raises(cov.StageError, match="dtype mismatch"):
        _run(model, {"x": x}, pack=False)


def test_split_with_a_zero_size_part():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    sizes = onnx.numpy_helper.from_array(np.array([2, 0, 3], dtype=np.int64), "sizes")
    model = _model(
        [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=-1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, k]) for n, k in (("a", 2), ("b", 0), ("c", 3))],
        opset=18,
        inits=[sizes],
    )
    expected = _reference(model, {"x": x})
    assert [e.shape for e in expected] == [(2, 2), (2, 0), (2, 3)]
    assert _mismatch(_run(model, {"x": x}), expected) is None
    with pytest.raises(cov.StageError, match="sorted"):
        _run(model, {"x": x}, pack=False)


def test_upsample_nearest_with_scales_input():
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    scales = onnx.numpy_helper.from_array(np.array([1.0, 2.0, 3.0], dtype=np.float32), "scales")
    model = _model(
        [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 9])],
        opset=9,
        inits=[scales],
    )
    model.ir_version = 4
    expected = _reference(model, {"x": x})
    assert _mismatch(_run(model, {"x": x}), expected) is None
    with pytest.raises(cov.StageError):  # TVM reads scales from the attribute only
        _run(model, {"x": x}, pack=False)


@pytest.mark.parametrize(
    ("shape", "dtype", "attrs"),
    [
        ((1, 2, 5, 5), np.float32, {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "strides": [2, 2]}),
        ((2, 1, 6, 5), np.float32, {"kernel_shape": [2, 2], "storage_order": 1, "ceil_mode": 1, "strides": [2, 2]}),
        ((1, 1, 7, 6), np.uint8, {"kernel_shape": [3, 2], "dilations": [2, 1], "pads": [2, 0, 1, 1]}),
        ((1, 1, 7, 6), np.float32, {"kernel_shape": [3, 2], "strides": [2, 1], "auto_pad": "SAME_LOWER"}),
        ((1, 3, 9), np.float32, {"kernel_shape": [4], "strides": [3], "auto_pad": "SAME_UPPER"}),
        ((1, 1, 4, 4, 4), np.float32, {"kernel_shape": [2, 2, 2], "strides": [2, 1, 2], "auto_pad": "VALID"}),
    ],
)
def test_maxpool_indices_match_onnxruntime(shape, dtype, attrs):
    from harmonizer_deploy.core.onnxruntime import ort_session

    rng = np.random.default_rng(1)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(dtype)  # distinct values: one max per window
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model(
        [helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)],
        [helper.make_tensor_value_info("x", elem, list(shape))],
        [helper.make_tensor_value_info("y", elem, None), helper.make_tensor_value_info("i", TensorProto.INT64, None)],
        opset=12,
    )
    model.ir_version = 7
    expected = ort_session(model.SerializeToString(), quiet=True).run(None, {"x": x})
    assert _mismatch(_run(model, {"x": x}), expected) is None
    with pytest.raises(cov.StageError, match="Missing outputs"):
        _run(model, {"x": x}, pack=False)


def test_nonmaxsuppression_keeps_a_box_whose_iou_equals_the_threshold():
    from harmonizer_deploy.core.onnxruntime import ort_session

    boxes = np.array([[[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [0.0, 0.1, 2.0, 2.1]]], dtype=np.float32)
    scores = np.array([[[0.9, 0.8, 0.7]]], dtype=np.float32)
    consts = [
        onnx.numpy_helper.from_array(np.array([3], dtype=np.int64), "limit"),
        onnx.numpy_helper.from_array(np.array([1 / 3], dtype=np.float32), "iou"),  # box 1 vs box 0: IoU 2/6
    ]
    model = _model(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "limit", "iou"], ["selected"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 3])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)],
        opset=11,
        inits=consts,
    )
    model.ir_version = 7
    feeds = {"boxes": boxes, "scores": scores}
    expected = ort_session(model.SerializeToString(), quiet=True).run(None, feeds)
    np.testing.assert_array_equal(expected[0], [[0, 0, 0], [0, 0, 1]])  # box 2 overlaps box 0 by more
    assert _mismatch(_run(model, feeds), expected) is None
    assert _mismatch(_run(model, feeds, pack=False), expected) is not None


def _if_on_constant(cond: bool) -> onnx.ModelProto:
    """y = If(cond) then x + x*2 (a branch-local name `t` that the outer graph uses too) else an empty Optional."""
    seq = onnx.TypeProto()
    seq.tensor_type.elem_type = TensorProto.FLOAT
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["x", "t"], ["then_out"])],
        "then", [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [3])],
        [onnx.numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Optional", [], ["empty"], type=seq)], "else", [],
        [helper.make_value_info("empty", helper.make_optional_type_proto(seq))],
    )
    nodes = [
        helper.make_node("Neg", ["x"], ["t"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["y", "t"], ["z"]),
    ]
    cond_init = onnx.numpy_helper.from_array(np.array(cond), "cond")
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                  [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])], opset=18, inits=[cond_init])


def test_if_on_a_constant_condition_becomes_its_branch():
    from harmonizer_deploy.frontend.branch import inline_constant_ifs

    model = _if_on_constant(True)
    x = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    inlined = inline_constant_ifs(model)
    assert "If" not in [n.op_type for n in inlined.graph.node]
    onnx.checker.check_model(inlined)
    assert _mismatch(_run(inlined, {"x": x}), _reference(model, {"x": x})) is None
    with pytest.raises(cov.StageError, match="_EmptyOptional"):  # TVM imports both branches
        _run(model, {"x": x})
    dynamic = _if_on_constant(True)
    dynamic.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    del dynamic.graph.initializer[:]
    assert inline_constant_ifs(dynamic) is dynamic  # a run-time condition stays an If


def test_compile_prepare_step_inlines_a_constant_if():
    from harmonizer_deploy.custom_ops.tvm_prepare import prepare_for_tvm

    prepared, report = prepare_for_tvm(_if_on_constant(True))
    assert "If" not in [n.op_type for n in prepared.graph.node]
    assert report.folded.get("If") == 1


def test_identity_of_a_sequence_input():
    from harmonizer_deploy.core.onnxruntime import ort_session

    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 3]))
    model = _model([helper.make_node("Identity", ["xs"], ["ys"])], [helper.make_value_info("xs", seq)],
                   [helper.make_value_info("ys", seq)], opset=16)
    xs = [np.arange(6, dtype=np.float32).reshape(2, 3), -np.ones((2, 3), dtype=np.float32)]
    expected = ort_session(model.SerializeToString(), quiet=True).run(None, {"xs": xs})
    assert _mismatch(_run(model, {"xs": xs}), expected) is None
    with pytest.raises(cov.StageError, match="expect a Tensor"):  # TVM alone makes the input a Tensor
        _run(model, {"xs": xs}, pack=False)


def test_optional_has_element_of_an_untyped_input_is_refused_not_guessed():
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    model = _model([helper.make_node("OptionalHasElement", ["maybe"], ["has"])],
                   [helper.make_value_info("maybe", helper.make_optional_type_proto(seq))],
                   [helper.make_tensor_value_info("has", TensorProto.BOOL, [])], opset=18)
    with pytest.raises(cov.StageError, match="decided only at run time"):  # an empty input would read "present"
        _run(model, {"maybe": None})


@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_float8e8m0_rounds_like_onnx(saturate):
    x = np.array([1.0, 1.5, 1.75, 3.0, 0.3, -6.0, 2.0**127 * 1.5, 2.0**-127, 1e-40, 0.0, np.inf, np.nan,
                  np.float32(2.0) + np.float32(2.0**-22), 1.5 * 2.0**-126], dtype=np.float32)
    modes = ("up", "down", "nearest")
    nodes = [helper.make_node("Cast", ["x"], [m], to=TensorProto.FLOAT8E8M0, saturate=saturate, round_mode=m)
             for m in modes]
    outs = [helper.make_tensor_value_info(m, TensorProto.FLOAT8E8M0, [len(x)]) for m in modes]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])], outs, opset=25)
    model.ir_version = 11
    expected = _reference(model, {"x": x})
    assert _mismatch(_run(model, {"x": x}), expected) is None
    assert _mismatch(_run(model, {"x": x}, pack=False), expected) is not None
