"""The converter pack, checked the way the coverage report checks it: real ONNX node test cases, baked static,
through TVM with the pack, against the expected outputs. One representative case per converter (the full
node-test sweep is `harmonizer-deploy coverage`); plus the static-shape folding pre-pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tvm")

from harmonizer_deploy.coverage import tracker as cov
from harmonizer_deploy.frontend.fold import fold_static_shapes
from harmonizer_deploy.frontend.pack import CONVERTERS, SUB_PACKS

# (domain, op) -> a node test case that needs that converter to pass in the "TVM + our pack" column.
REPRESENTATIVE = {
    ("", "Swish"): "test_swish",
    ("", "Celu"): "test_celu",
    ("", "LayerNormalization"): "test_layer_normalization_3d_axis1_epsilon",
    ("", "LpNormalization"): "test_l2normalization_axis_0",
    ("", "CumProd"): "test_cumprod_1d_reverse_exclusive",
    ("", "HannWindow"): "test_hannwindow_symmetric",
    ("", "HammingWindow"): "test_hammingwindow",
    ("", "BlackmanWindow"): "test_blackmanwindow",
    ("", "ReverseSequence"): "test_reversesequence_batch",
    ("", "Attention"): "test_attention_4d_gqa_with_past_and_present",
    ("", "Constant"): "test_elu_default_expanded_ver18",
    ("", "NegativeLogLikelihoodLoss"): "test_nllloss_NCd1d2_with_weight_reduction_mean",
    ("", "SoftmaxCrossEntropyLoss"): "test_sce_mean_weight_ii_log_prob",
    ("", "RNN"): "test_rnn_seq_length",
    ("", "GRU"): "test_gru_with_initial_bias",
    ("", "LSTM"): "test_lstm_with_peepholes",
    ("", "RMSNormalization"): "test_rms_normalization_2d_axis0",
    ("", "Pow"): "test_pow_types_int32_float32",
    ("", "Dropout"): "test_dropout_default_mask",
    ("", "Cast"): "test_cast_FLOAT_to_FLOAT8E4M3FN",
    ("", "CastLike"): "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2",
    ("", "BitCast"): "test_bitcast_float32_to_int32",  # the cast group (pack_cast.py) from here
    ("", "EyeLike"): "test_eyelike_with_dtype",
    ("", "Split"): "test_split_zero_size_splits_opset18",
    ("", "Upsample"): "test_upsample_nearest",
    ("", "MaxPool"): "test_maxpool_with_argmax_2d_precomputed_strides",
    ("", "NonMaxSuppression"): "test_nonmaxsuppression_iou_threshold_boundary",
    ("", "ReduceSum"): "test_reduce_sum_empty_set",
    ("", "ReduceSumSquare"): "test_reduce_sum_square_empty_set",
    ("", "ReduceL1"): "test_reduce_l1_empty_set",
    ("", "ReduceL2"): "test_reduce_l2_empty_set",
    ("", "ReduceProd"): "test_reduce_prod_empty_set",
    ("", "ReduceLogSum"): "test_reduce_log_sum_empty_set",
    ("", "ReduceLogSumExp"): "test_reduce_log_sum_exp_empty_set",
    ("", "ReduceMax"): "test_reduce_max_empty_set",
    ("", "ReduceMin"): "test_reduce_min_bool_inputs",
    ("", "Mod"): "test_mod_float_edge_cases_fmod_0_float32",
    ("", "IsInf"): "test_isinf_negative",
    ("", "Mish"): "test_mish",
    ("", "Softplus"): "test_mish_expanded",
    ("", "SpaceToDepth"): "test_spacetodepth_crd_mode_example",
}
EXTRA = ["test_attention_3d_causal", "test_gru_batchwise", "test_simple_rnn_bidirectional",
         "test_reduce_max_empty_set_bool", "test_reduce_sum_empty_set_non_reduced_axis_zero",
         "test_reduce_sum_empty_axes_input_noop", "test_mod_mixed_sign_int32", "test_isinf_positive",
         "test_mod_float16_mixed_sign_fmod_0", "test_spacetodepth", "test_reduce_min_empty_set",
         "test_reduce_log_sum_exp_empty_set_expanded"]
FOLDING = ["test_layer_normalization_4d_axis0_expanded"]  # passes only with the shape-folding pre-pass


@pytest.fixture(scope="module")
def cases():
    names = [*REPRESENTATIVE.values(), *EXTRA, *FOLDING]
    found = {c.name: c for c in cov.collect_cases(names) if c.name in names}
    assert sorted(found) == sorted(names)
    return found


def test_every_converter_has_a_representative_case():
    from harmonizer_deploy.frontend import pack_cast

    # pack_cast's converters have their representative cases here; the other op-group modules' converters are
    # checked in tests/frontend/test_pack_<group>.py
    others = set(SUB_PACKS) - set(pack_cast.CONVERTERS)
    refusals = {("", "OptionalHasElement")}  # pack_cast refuses it for untyped inputs: no case passes through it
    assert set(REPRESENTATIVE) == set(CONVERTERS) - others - refusals


@pytest.mark.parametrize("name", [*REPRESENTATIVE.values(), *EXTRA, *FOLDING])
def test_node_case_passes_with_the_pack(cases, name):
    cov.run_tvm_pack(cases[name], lambda stage: None)  # raises StageError on any failure or mismatch


# Without the pack, a reduction over an empty set returns TVM's uninitialised output buffer: usually fresh zero
# pages, so ReduceSum's expected 0 matched by chance now and then. ReduceMin's expected +inf never does.
@pytest.mark.parametrize("name", [REPRESENTATIVE[("", "Celu")], "test_reduce_min_empty_set",
                                  REPRESENTATIVE[("", "Mod")], REPRESENTATIVE[("", "Mish")], *FOLDING])
def test_same_case_fails_without_the_pack(cases, name):
    with pytest.raises(cov.StageError):
        cov.run_tvm_static(cases[name], lambda stage: None)


def _shape_model() -> onnx.ModelProto:
    """y = Reshape(x, Concat(Shape(x)[0:1], [-1])); the shape is also a graph output."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Shape", ["x"], ["shape_out"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12]),
            helper.make_tensor_value_info("shape_out", TensorProto.INT64, [3]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_replaces_shape_arithmetic_but_not_outputs_or_data():
    model = _shape_model()
    folded = fold_static_shapes(model)
    assert [n.op_type for n in folded.graph.node] == ["Reshape", "Shape"]  # the output-producing Shape stays
    values = {t.name: onnx.numpy_helper.to_array(t) for t in folded.graph.initializer}
    np.testing.assert_array_equal(values["target"], [2, -1])
    assert model.graph.node[0].op_type == "Shape"  # the input model is untouched
    onnx.checker.check_model(folded)


def test_fold_leaves_dynamic_shapes_alone():
    model = _shape_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert fold_static_shapes(model).graph.node[0].op_type == "Shape"


def test_applies_to_limits_which_nodes_a_converter_takes_over():
    from harmonizer_deploy.frontend.hook import from_onnx_with_converters

    nodes = [
        helper.make_node("Cast", ["x"], ["a"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    seen = []

    def to_float_only(bb, inputs, attrs, ctx):
        from tvm import relax

        seen.append(int(attrs["to"]))
        return relax.op.astype(inputs[0], "float32")

    to_float_only.applies_to = lambda node, graph: node.attribute[0].i == TensorProto.FLOAT
    from_onnx_with_converters(model, {("", "Cast"): to_float_only}, keep_params_in_input=False)
    assert seen == [TensorProto.FLOAT]  # the Cast to double stayed with TVM's converter


def test_a_reduction_after_a_taken_over_node_still_sees_its_empty_dim():
    """The pack decides to take over a reduction from the ONNX graph's (inferred) dims, while the hook is renaming
    the nodes it takes: inference must see the graph as exported, or the Celu (renamed) hides the zero-size dim
    of its output and TVM's own ReduceMin returns an uninitialised buffer (it gave [inf, 0])."""
    nodes = [helper.make_node("Celu", ["x"], ["t"], alpha=1.0),
             helper.make_node("ReduceMin", ["t", "axes"], ["y"], keepdims=0)]
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 0])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert ("", "Celu") in CONVERTERS
    for _ in range(3):
        (got,) = cov.run_tvm_model(model, [np.zeros((2, 0), np.float32)], lambda stage: None, CONVERTERS)
        np.testing.assert_array_equal(got, [np.inf, np.inf])
