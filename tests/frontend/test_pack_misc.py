"""The pack's misc converters (frontend/pack_misc.py) on tiny models with runtime inputs: imported through the
pack, compiled for llvm, run on the Relax VM and compared with onnxruntime. The node suite bakes most inputs
into constants; these models keep the data inputs at runtime and reach the branches the suite does not
(pivoting, IDF/TFIDF weights, circular wrap, min/max aggregation, missing values)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tvm")

from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.coverage import tracker as cov
from harmonizer_deploy.frontend import pack_misc
from harmonizer_deploy.frontend.pack import CONVERTERS

RNG = np.random.default_rng(7)
ML = "ai.onnx.ml"


def _model(
    node: onnx.NodeProto, inputs: list, outputs: list, opset: int, ml: int | None = None, inits: tuple | list = ()
) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(ML, ml)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10 if opset >= 23 else 8
    return model


def _vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _run_pack(model: onnx.ModelProto, feeds: dict, converters: dict) -> list:
    inputs = [feeds[i.name] for i in model.graph.input]
    return cov.run_tvm_model(model, inputs, lambda stage: None, converters)


# Families judged differently from the default (onnxruntime, rtol 1e-5, atol 1e-6): float16 MatMul at the node
# suite's rtol 1e-3 (one float16 rounding); float16 Softmax against the float64 softmax of the same input
# within two float16 ulps (onnxruntime flushes its tiny probabilities to zero).
TOLERANCE = {("", "MatMul"): (1e-3, 0.0), ("", "Softmax"): (2e-3, 1e-7)}


def _expected(model: onnx.ModelProto, feeds: dict, key: tuple | None = None) -> list:
    if key == ("", "Softmax"):
        x = feeds["x"].astype(np.float64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return [(e / e.sum(axis=-1, keepdims=True)).astype(feeds["x"].dtype)]
    return ort_session(model.SerializeToString(), quiet=True).run(None, feeds)


def _check(model: onnx.ModelProto, feeds: dict, key: tuple | None = None) -> None:
    rtol, atol = TOLERANCE.get(key, (1e-5, 1e-6))
    got = _run_pack(model, feeds, CONVERTERS)
    why = cov.compare_outputs(got, _expected(model, feeds, key), rtol, atol)
    assert why is None, why


# ------------------------------------------------------------------------------------------------- models


def rotary() -> tuple[onnx.ModelProto, dict]:
    """3D input, partial rotary dim, interleaved pairs, runtime position_ids."""
    b, s, heads, d, rot, max_pos = 2, 3, 2, 8, 4, 10
    node = helper.make_node(
        "RotaryEmbedding", ["x", "cos", "sin", "pos"], ["y"], num_heads=heads, rotary_embedding_dim=rot, interleaved=1
    )
    inits = [
        onnx.numpy_helper.from_array(RNG.standard_normal((max_pos, rot // 2)).astype(np.float32), n)
        for n in ("cos", "sin")
    ]
    model = _model(
        node,
        [_vi("x", TensorProto.FLOAT, [b, s, heads * d]), _vi("pos", TensorProto.INT64, [b, s])],
        [_vi("y", TensorProto.FLOAT, [b, s, heads * d])],
        23,
        inits=inits,
    )
    feeds = {
        "x": RNG.standard_normal((b, s, heads * d)).astype(np.float32),
        "pos": np.array([[0, 4, 9], [2, 2, 7]], np.int64),
    }
    return model, feeds


def tensor_scatter() -> tuple[onnx.ModelProto, dict]:
    """Circular mode: batch 1's write wraps past the end of the cache; everything at runtime."""
    node = helper.make_node("TensorScatter", ["cache", "update", "at"], ["out"], mode="circular", axis=2)
    model = _model(
        node,
        [
            _vi("cache", TensorProto.FLOAT, [2, 3, 5, 4]),
            _vi("update", TensorProto.FLOAT, [2, 3, 2, 4]),
            _vi("at", TensorProto.INT64, [2]),
        ],
        [_vi("out", TensorProto.FLOAT, [2, 3, 5, 4])],
        24,
    )
    feeds = {
        "cache": RNG.standard_normal((2, 3, 5, 4)).astype(np.float32),
        "update": RNG.standard_normal((2, 3, 2, 4)).astype(np.float32),
        "at": np.array([1, 4], np.int64),
    }
    return model, feeds


def _tfidf(mode: str) -> tuple[onnx.ModelProto, dict]:
    """Unigrams and bigrams, skips up to 2, weights; tokens at runtime."""
    pool = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7]  # unigrams 2 3 5 4, bigrams (5,6) (7,8) (6,7)
    node = helper.make_node(
        "TfIdfVectorizer",
        ["x"],
        ["y"],
        mode=mode,
        min_gram_length=1,
        max_gram_length=2,
        max_skip_count=2,
        ngram_counts=[0, 4],
        ngram_indexes=[6, 0, 1, 2, 3, 4, 5],
        pool_int64s=pool,
        weights=[0.5, 1.5, 2.0, 3.0, 0.25, 4.0, 1.0],
    )
    model = _model(node, [_vi("x", TensorProto.INT64, [2, 9])], [_vi("y", TensorProto.FLOAT, [2, 7])], 9)
    feeds = {"x": np.array([[5, 6, 7, 8, 6, 7, 2, 5, 6], [3, 3, 6, 1, 7, 4, 4, 8, 5]], np.int64)}
    return model, feeds


def det() -> tuple[onnx.ModelProto, dict]:
    """A batch of 4x4: random, zero leading pivot (needs a row swap), singular, and permuted identity."""
    x = RNG.standard_normal((4, 4, 4)).astype(np.float32)
    x[1, 0, 0] = 0.0
    x[2, 3] = x[2, 0] + x[2, 1]
    x[3] = np.eye(4, dtype=np.float32)[[2, 0, 3, 1]]
    model = _model(
        helper.make_node("Det", ["x"], ["y"]),
        [_vi("x", TensorProto.FLOAT, [4, 4, 4])],
        [_vi("y", TensorProto.FLOAT, [4])],
        22,
    )
    return model, {"x": x}


def batchnorm_training() -> tuple[onnx.ModelProto, dict]:
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], epsilon=1e-3, momentum=0.8, training_mode=1
    )
    inits = [onnx.numpy_helper.from_array(RNG.uniform(0.5, 1.5, 3).astype(np.float32), n) for n in "sbmv"]
    model = _model(
        node,
        [_vi("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [
            _vi("y", TensorProto.FLOAT, [2, 3, 4, 5]),
            _vi("rm", TensorProto.FLOAT, [3]),
            _vi("rv", TensorProto.FLOAT, [3]),
        ],
        15,
        inits=inits,
    )
    return model, {"x": RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)}


def mel() -> tuple[onnx.ModelProto, dict]:
    """All inputs constant (how models carry them): folded at import."""
    values = {
        "bins": np.int64(6),
        "dft": np.int64(32),
        "rate": np.int64(16000),
        "lo": np.float32(100.0),
        "hi": np.float32(7000.0),
    }
    node = helper.make_node("MelWeightMatrix", list(values), ["w"], output_datatype=TensorProto.FLOAT)
    inits = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()]
    model = _model(node, [], [_vi("w", TensorProto.FLOAT, [17, 6])], 17, inits=inits)
    return model, {}


def ml_binarizer_and_features() -> tuple[onnx.ModelProto, dict]:
    nodes = [
        helper.make_node("Binarizer", ["x"], ["b"], domain=ML, threshold=0.25),
        helper.make_node("ArrayFeatureExtractor", ["b", "idx"], ["y"], domain=ML),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [_vi("x", TensorProto.FLOAT, [3, 5])],
        [_vi("y", TensorProto.FLOAT, [3, 3])],
        [onnx.numpy_helper.from_array(np.array([4, 0, 2], np.int64), "idx")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)])
    model.ir_version = 8
    return model, {"x": RNG.standard_normal((3, 5)).astype(np.float32)}


def _trees(aggregate: int) -> tuple[onnx.ModelProto, dict]:
    """Two trees over 3 features, 2 targets; node 1 routes NaN to its true branch; a MEMBER test in tree 2."""
    node = helper.make_node(
        "TreeEnsemble",
        ["x"],
        ["y"],
        domain=ML,
        n_targets=2,
        aggregate_function=aggregate,
        post_transform=0,
        tree_roots=[0, 3],
        nodes_modes=helper.make_tensor("m", TensorProto.UINT8, (5,), [0, 3, 1, 6, 4]),
        nodes_featureids=[0, 1, 2, 2, 1],
        nodes_splits=helper.make_tensor("s", TensorProto.FLOAT, (5,), [0.0, 0.5, -0.2, 0.0, 1.0]),
        nodes_truenodeids=[1, 0, 2, 0, 4],
        nodes_trueleafs=[0, 1, 1, 1, 1],
        nodes_falsenodeids=[2, 1, 3, 4, 5],
        nodes_falseleafs=[0, 1, 1, 0, 1],
        nodes_missing_value_tracks_true=[0, 1, 0, 0, 0],
        membership_values=helper.make_tensor("mv", TensorProto.FLOAT, (3,), [1.0, 2.0, np.nan]),
        leaf_targetids=[0, 1, 0, 1, 0, 1],
        leaf_weights=helper.make_tensor("w", TensorProto.FLOAT, (6,), [1.5, -2.0, 3.0, 0.25, -1.0, 7.0]),
    )
    model = _model(node, [_vi("x", TensorProto.FLOAT, [6, 3])], [_vi("y", TensorProto.FLOAT, [6, 2])], 21, ml=5)
    x = RNG.standard_normal((6, 3)).astype(np.float32)
    x[1, 1], x[2, 2], x[3, 2], x[4, 1] = np.nan, 1.0, 2.0, 1.0
    return model, {"x": x}


def half_matmul() -> tuple[onnx.ModelProto, dict]:
    """Dot products of 512 float16 terms: TVM's float16 accumulator drifts by whole units."""
    w = RNG.random((512, 8)).astype(np.float16)
    model = _model(
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        [_vi("x", TensorProto.FLOAT16, [4, 512])],
        [_vi("y", TensorProto.FLOAT16, [4, 8])],
        17,
        inits=[onnx.numpy_helper.from_array(w, "w")],
    )
    return model, {"x": RNG.random((4, 512)).astype(np.float16)}


def half_softmax() -> tuple[onnx.ModelProto, dict]:
    """1000 terms: TVM's float16 exp-sum drifts by tens of percent on the small probabilities."""
    model = _model(
        helper.make_node("Softmax", ["x"], ["y"], axis=-1),
        [_vi("x", TensorProto.FLOAT16, [3, 2, 1000])],
        [_vi("y", TensorProto.FLOAT16, [3, 2, 1000])],
        17,
    )
    return model, {"x": (RNG.standard_normal((3, 2, 1000)) * 3).astype(np.float16)}


FAMILIES = {
    ("", "RotaryEmbedding"): rotary,
    ("", "TensorScatter"): tensor_scatter,
    ("", "TfIdfVectorizer"): lambda: _tfidf("TFIDF"),
    ("", "Det"): det,
    ("", "BatchNormalization"): batchnorm_training,
    ("", "MelWeightMatrix"): mel,
    (ML, "Binarizer"): ml_binarizer_and_features,
    (ML, "ArrayFeatureExtractor"): ml_binarizer_and_features,
    (ML, "TreeEnsemble"): lambda: _trees(1),
    ("", "MatMul"): half_matmul,
    ("", "Softmax"): half_softmax,
}
EXTRA = {
    "tfidf_tf": lambda: _tfidf("TF"),
    "tfidf_idf": lambda: _tfidf("IDF"),
    "trees_average": lambda: _trees(0),
    "trees_min": lambda: _trees(2),
    "trees_max": lambda: _trees(3),
}


def test_every_misc_converter_has_a_model():
    assert set(FAMILIES) == set(pack_misc.CONVERTERS)
    assert set(pack_misc.CONVERTERS) <= set(CONVERTERS)  # registered in the pack


@pytest.mark.parametrize("key", list(FAMILIES), ids=lambda k: k[1])
def test_matches_onnxruntime_through_the_pack(key):
    _check(*FAMILIES[key](), key)


@pytest.mark.parametrize("name", list(EXTRA))
def test_more_modes_match_onnxruntime(name):
    _check(*EXTRA[name]())


@pytest.mark.parametrize("key", list(FAMILIES), ids=lambda k: k[1])
def test_fails_without_the_converter(key):
    model, feeds = FAMILIES[key]()
    without = {k: v for k, v in CONVERTERS.items() if k != key}
    try:
        got = _run_pack(model, feeds, without)
    except cov.StageError:
        return
    assert cov.compare_outputs(got, _expected(model, feeds, key), *TOLERANCE.get(key, (1e-5, 1e-6))) is not None


def test_det_matches_numpy_on_random_batches():
    x = RNG.standard_normal((3, 2, 5, 5)).astype(np.float32)
    model = _model(
        helper.make_node("Det", ["x"], ["y"]),
        [_vi("x", TensorProto.FLOAT, [3, 2, 5, 5])],
        [_vi("y", TensorProto.FLOAT, [3, 2])],
        22,
    )
    got = _run_pack(model, {"x": x}, CONVERTERS)[0]
    np.testing.assert_allclose(got, np.linalg.det(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_malformed_attributes_are_one_line_errors_not_crashes():
    from harmonizer_deploy.core.errors import HarmonizerError

    model, feeds = _trees(1)
    feature_ids = next(a for a in model.graph.node[0].attribute if a.name == "nodes_featureids")
    feature_ids.ints[2] = 7  # the input has 3 columns: a "fast" take would read past the row
    with pytest.raises(cov.StageError, match="feature id is outside") as info:  # the harness wraps the import error
        _run_pack(model, feeds, CONVERTERS)
    assert isinstance(info.value.__cause__, HarmonizerError)
    model, feeds = _tfidf("TF")
    counts = next(a for a in model.graph.node[0].attribute if a.name == "ngram_counts")
    counts.ints[1] = 5  # 5 unigrams leave 5 pool entries: not whole bigrams
    with pytest.raises(cov.StageError, match="whole 2-grams") as info:
        _run_pack(model, feeds, CONVERTERS)
    assert isinstance(info.value.__cause__, HarmonizerError)
