"""The image converters of the pack (frontend/pack_image.py): tiny ONNX models imported through the pack, compiled
for llvm, run on the Relax VM and compared with onnxruntime; plus node test cases that failed before each converter.
Each family also shows it fails without its converter (TVM's own import is refused, wrong or absent)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.coverage import tracker as cov
from harmonizer_deploy.frontend import pack_image
from harmonizer_deploy.frontend.fold import fold_static_shapes
from harmonizer_deploy.frontend.pack import CONVERTERS

WITHOUT_IMAGE = {k: v for k, v in CONVERTERS.items() if k not in pack_image.CONVERTERS}

# (domain, op) -> node test cases that pass under "TVM + our pack" only with that converter.
REPRESENTATIVE = {
    ("", "Resize"): ["test_resize_downsample_scales_cubic", "test_resize_downsample_scales_cubic_antialias",
                     "test_resize_tf_crop_and_resize_axes_3_2", "test_resize_upsample_sizes_nearest_not_smaller",
                     "test_resize_downsample_scales_linear_half_pixel_symmetric"],
    ("", "CenterCropPad"): ["test_center_crop_pad_crop_and_pad", "test_center_crop_pad_crop_negative_axes_hwc"],
    ("", "ConvTranspose"): ["test_convtranspose_output_shape"],
    ("", "Col2Im"): ["test_col2im_pads", "test_col2im_5d"],
    ("", "DeformConv"): ["test_deform_conv_with_mask_bias", "test_deform_conv_with_multiple_offset_groups"],
}
# AffineGrid's expanded bodies: fold.py's If inlining plus pack_quantseq's scalar-axes Unsqueeze
AFFINE_GRID = ["test_affine_grid_2d_expanded", "test_affine_grid_3d_align_corners_expanded"]
# pass only because the shape-folding pre-pass now folds to a fixpoint (a Pad fed by folded shape arithmetic);
# the AffineGrid ones above also need its If inlining (a condition on the constant size input)
FOLDING = ["test_center_crop_pad_crop_expanded", "test_center_crop_pad_pad_expanded"]
ALL_CASES = [*(n for group in REPRESENTATIVE.values() for n in group), *AFFINE_GRID, *FOLDING]


def _model(nodes: list, inputs: list, outputs: list, inits: Sequence[np.ndarray | Any] = (), opset: int = 19,
           ) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _tvm(model: onnx.ModelProto, feeds: list[np.ndarray], converters: dict) -> list[Any]:
    return cov.run_tvm_model(model, feeds, lambda stage: None, converters)


def _expected(model: onnx.ModelProto, feeds: list[np.ndarray]) -> list[Any]:
    names = [vi.name for vi in model.graph.input]
    return ort_session(model.SerializeToString()).run(None, dict(zip(names, feeds, strict=True)))


def _assert_pack_matches(model: onnx.ModelProto, feeds: list[np.ndarray], rtol: float = 1e-5,
                         atol: float = 1e-5) -> None:
    got, want = _tvm(model, feeds, CONVERTERS), _expected(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _assert_wrong_without(model: onnx.ModelProto, feeds: list[np.ndarray]) -> None:
    """Without the image converters TVM refuses the node or returns other numbers/shapes."""
    try:
        got = _tvm(model, feeds, WITHOUT_IMAGE)
    except cov.StageError:
        return
    want = _expected(model, feeds)
    assert any(g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-4)
               for g, w in zip(got, want, strict=True))


def test_every_image_converter_has_representative_cases():
    assert set(REPRESENTATIVE) == set(pack_image.CONVERTERS)
    assert all(CONVERTERS[k] is fn for k, fn in pack_image.CONVERTERS.items())  # merged into the pack


@pytest.fixture(scope="module")
def cases():
    names = ALL_CASES
    found = {c.name: c for c in cov.collect_cases(names) if c.name in names}
    assert sorted(found) == sorted(names)
    return found


@pytest.mark.parametrize("name", ALL_CASES)
def test_node_case_passes_with_the_pack(cases, name):
    cov.run_tvm_pack(cases[name], lambda stage: None)  # raises StageError on any failure or mismatch


# ------------------------------------------------------------------------------- Resize


def _resize_model(shape: list[int], out: list[int], scales: list[float] | None = None,
                  sizes: list[int] | None = None, **attrs: Any) -> onnx.ModelProto:
    inits = []
    names = ["x", ""]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        names.append("scales")
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        names += ["", "sizes"]
    node = helper.make_node("Resize", names, ["y"], **attrs)
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)


RESIZE_MODELS = {
    "cubic_downsample_scales": lambda: _resize_model([1, 2, 7, 9], [1, 2, 4, 6], scales=[1, 1, 0.6, 0.7],
                                                     mode="cubic"),
    "linear_antialias": lambda: _resize_model([1, 1, 8, 8], [1, 1, 3, 5], sizes=[1, 1, 3, 5], mode="linear",
                                              antialias=1),
    "cubic_antialias_exclude_outside": lambda: _resize_model(
        [2, 1, 9, 6], [2, 1, 4, 4], scales=[1, 1, 0.5, 0.75], mode="cubic", antialias=1, exclude_outside=1,
        cubic_coeff_a=-0.5),
    "nearest_axes_not_larger": lambda: _resize_model([1, 3, 5, 4], [1, 3, 7, 6], sizes=[6, 7], axes=[3, 2],
                                                     keep_aspect_ratio_policy="not_larger"),
    "linear_half_pixel_symmetric": lambda: _resize_model(
        [1, 1, 5, 5], [1, 1, 8, 8], scales=[1, 1, 1.7, 1.7], mode="linear",
        coordinate_transformation_mode="half_pixel_symmetric"),
}


@pytest.mark.parametrize("name", sorted(RESIZE_MODELS))
def test_resize_matches_onnxruntime_and_fails_without_the_converter(name):
    model = RESIZE_MODELS[name]()
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    _assert_pack_matches(model, [x], rtol=1e-4, atol=1e-5)
    _assert_wrong_without(model, [x])


def test_resize_that_tvm_gets_right_stays_with_tvm():
    """An integer upsample is TVM's own fused resize2d, not the gather graph."""
    model = _resize_model([1, 1, 4, 4], [1, 1, 8, 8], scales=[1, 1, 2, 2], mode="linear")
    assert not pack_image.resize.applies_to(model.graph.node[0], model.graph)
    assert pack_image.resize.applies_to(RESIZE_MODELS["cubic_downsample_scales"]().graph.node[0],
                                        RESIZE_MODELS["cubic_downsample_scales"]().graph)


# ------------------------------------------------------------------------------- CenterCropPad


@pytest.mark.parametrize("target,axes", [([3, 8], [1, 2]), ([5, 2], [-1, 1]), ([2, 4, 7], None)])
def test_center_crop_pad_matches_onnxruntime_and_needs_the_converter(target, axes):
    shape = [2, 5, 6]
    rank = len(shape)
    out = list(shape)
    for a, t in zip([a % rank for a in (axes or range(rank))], target, strict=True):
        out[a] = t
    node = helper.make_node("CenterCropPad", ["x", "shape"], ["y"], **({"axes": axes} if axes else {}))
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                   [numpy_helper.from_array(np.array(target, np.int64), "shape")], opset=18)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    _assert_pack_matches(model, [x])
    with pytest.raises(cov.StageError):
        _tvm(model, [x], WITHOUT_IMAGE)


# ------------------------------------------------------------------------------- ConvTranspose, Col2Im


@pytest.mark.parametrize("out_hw,auto_pad", [((10, 8), "NOTSET"), ((7, 5), "SAME_UPPER"), ((8, 6), "NOTSET")])
def test_conv_transpose_output_shape_matches_onnxruntime(out_hw, auto_pad):
    x_shape, w_shape = [1, 2, 3, 3], [2, 3, 3, 3]
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2], output_shape=list(out_hw),
                            auto_pad=auto_pad)
    rng = np.random.default_rng(2)
    w = rng.standard_normal(w_shape).astype(np.float32)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, *out_hw])],
                   [numpy_helper.from_array(w, "w")])
    x = rng.standard_normal(x_shape).astype(np.float32)
    _assert_pack_matches(model, [x], rtol=1e-4)
    _assert_wrong_without(model, [x])


def test_col2im_matches_onnxruntime_and_needs_the_converter():
    image, block = [5, 6], [2, 3]
    attrs = {"dilations": [1, 2], "pads": [1, 0, 0, 1], "strides": [2, 1]}
    padded = [image[0] + 1, image[1] + 1]
    counts = [(padded[d] - (attrs["dilations"][d] * (block[d] - 1) + 1)) // attrs["strides"][d] + 1 for d in (0, 1)]
    x_shape = [2, 3 * 6, counts[0] * counts[1]]
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], **attrs)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, *image])],
                   [numpy_helper.from_array(np.array(image, np.int64), "image"),
                    numpy_helper.from_array(np.array(block, np.int64), "block")])
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    _assert_pack_matches(model, [x])
    with pytest.raises(cov.StageError):
        _tvm(model, [x], WITHOUT_IMAGE)


# ------------------------------------------------------------------------------- DeformConv


def test_deform_conv_with_runtime_offsets_and_mask_matches_onnxruntime():
    """Offsets and mask are graph inputs (runtime data), with groups, offset groups, stride, pads, dilation."""
    n, c, h, w, oc, kh, kw = 2, 4, 6, 7, 6, 2, 3
    attrs = {"group": 2, "offset_group": 2, "strides": [2, 1], "pads": [1, 1, 0, 1], "dilations": [1, 2]}
    oh = (h + 1 - ((kh - 1) * 1 + 1)) // 2 + 1
    ow = (w + 2 - ((kw - 1) * 2 + 1)) // 1 + 1
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    offset = (2.5 * rng.standard_normal((n, 2 * kh * kw * 2, oh, ow))).astype(np.float32)  # some fall outside
    mask = rng.uniform(0, 1, (n, 2 * kh * kw, oh, ow)).astype(np.float32)
    weight = rng.standard_normal((oc, c // 2, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    node = helper.make_node("DeformConv", ["x", "w", "offset", "b", "mask"], ["y"], **attrs)
    f = TensorProto.FLOAT
    model = _model([node], [helper.make_tensor_value_info("x", f, x.shape),
                            helper.make_tensor_value_info("offset", f, offset.shape),
                            helper.make_tensor_value_info("mask", f, mask.shape)],
                   [helper.make_tensor_value_info("y", f, [n, oc, oh, ow])],
                   [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    _assert_pack_matches(model, [x, offset, mask], rtol=1e-4, atol=1e-4)
    with pytest.raises(cov.StageError):
        _tvm(model, [x, offset, mask], WITHOUT_IMAGE)


# ------------------------------------------------------------------------------- Unsqueeze scalar axes, If folding


def test_unsqueeze_with_scalar_axes_matches_onnxruntime():
    axes = helper.make_node("Constant", [], ["axes"], value_int=-1)
    node = helper.make_node("Unsqueeze", ["x", "axes"], ["y"])
    model = _model([axes, node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 1])], opset=13)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    _assert_pack_matches(model, [x])
    with pytest.raises(cov.StageError):
        _tvm(model, [x], {k: v for k, v in CONVERTERS.items() if k != ("", "Unsqueeze")})


def _if_on_rank_model() -> onnx.ModelProto:
    """y = x * 2 if rank(x) == 2 else x + 1, the condition computed from Shape(x) and a constant."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Add", ["x", "two"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["rank"]),
             helper.make_node("Constant", [], ["want"], value_int=2),
             helper.make_node("Equal", ["rank", "want"], ["is2d"]),
             helper.make_node("If", ["is2d"], ["y"], then_branch=then_g, else_branch=else_g)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [two], opset=17)


def test_fold_renames_branch_names_that_clash_with_the_outer_graph():
    """A branch's local value named like an outer one ("u") must not overwrite it when the branch is spliced
    into the graph: the outer reader still gets -x."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["u"]),
                                helper.make_node("Add", ["u", "two"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "two"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Neg", ["x"], ["u"]),
             helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Size", ["s"], ["rank"]),
             helper.make_node("Constant", [], ["want"], value_int=2),
             helper.make_node("Equal", ["rank", "want"], ["is2d"]),
             helper.make_node("If", ["is2d"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Identity", ["u"], ["z"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                    helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])], [two], opset=17)
    folded = fold_static_shapes(model)
    assert "If" not in [n.op_type for n in folded.graph.node]
    outputs = [o for n in folded.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))  # every value still has one producer
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y, z = _tvm(folded, [x], CONVERTERS)
    np.testing.assert_allclose(y, x * 2 + 2)
    np.testing.assert_allclose(z, -x)


def test_fold_inlines_an_if_whose_condition_is_static():
    model = _if_on_rank_model()
    folded = fold_static_shapes(model)
    # the branch's Mul writes the If's output itself: no Identity after it
    assert [n.op_type for n in folded.graph.node if n.op_type != "Constant"] == ["Mul"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(_tvm(folded, [x], CONVERTERS)[0], x * 2)
