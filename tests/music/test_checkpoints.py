"""Loaders for Magenta's released formats: self-written checkpoints round-trip to identical outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.checkpoints import (
    load_released,
    load_tf1_checkpoint,
    load_tfjs_manifest,
    write_tf1_checkpoint,
    write_tfjs_manifest,
)
from harmonizer_deploy.music.config import ModelConfig, load_config
from harmonizer_deploy.music.encoding import realistic_inputs
from harmonizer_deploy.music.model import build_model, expected_shapes, set_weights

REGULAR = ModelConfig(name="reg", num_layers=6, num_filters=8)
# The Doodle's structure in miniature: all separable, dilated, one split layer, context mask.
DOODLE_LIKE = ModelConfig(name="doodle-mini", num_layers=8, num_filters=8, separable=True,
                          dilations=((1, 1), (2, 2), (16, 32)), pointwise_split_layers=(3,),
                          num_pointwise_splits=4, mask_indicates_context=True)


def _random_weights(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Non-trivial values everywhere (batch-norm stats too), so a mis-assigned variable changes the output."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(config).items():
        value = rng.normal(0, 0.3, shape).astype(np.float32)
        if name.endswith("popvariance"):
            value = np.abs(value) + 0.5
        out[name] = value
    return out


def _outputs(config: ModelConfig, weights: dict[str, np.ndarray]) -> np.ndarray:
    model = build_model(config)
    set_weights(model, config, weights)
    return np.asarray(model(realistic_inputs(3, 2, 16), training=False))


def test_tf1_checkpoint_round_trip(tmp_path):
    weights = _random_weights(REGULAR, 0)
    prefix = write_tf1_checkpoint(weights, tmp_path / "ckpt" / "model.ckpt")
    loaded = load_tf1_checkpoint(prefix, REGULAR)
    assert set(loaded) == set(weights)
    for k in weights:
        np.testing.assert_array_equal(loaded[k], weights[k])
    np.testing.assert_array_equal(_outputs(REGULAR, loaded), _outputs(REGULAR, weights))
    # the directory form (with TF's `checkpoint` index file) and the .index path resolve to the same
    assert load_released(tmp_path / "ckpt", REGULAR).keys() == weights.keys()
    assert load_released(str(prefix) + ".index", REGULAR).keys() == weights.keys()


def test_tf1_checkpoint_names_missing_and_misshaped_variables(tmp_path):
    weights = _random_weights(REGULAR, 1)
    del weights["conv3/popmean"]
    prefix = write_tf1_checkpoint(weights, tmp_path / "a" / "model.ckpt")
    with pytest.raises(HarmonizerError, match=r"model/conv3/popmean.*missing"):
        load_tf1_checkpoint(prefix, REGULAR)
    weights = _random_weights(REGULAR, 1)
    weights["conv2/weights"] = np.zeros((3, 3, 8, 9), np.float32)
    prefix = write_tf1_checkpoint(weights, tmp_path / "b" / "model.ckpt")
    with pytest.raises(HarmonizerError, match=r"model/conv2/weights.*\[3, 3, 8, 9\].*\[3, 3, 8, 8\]"):
        load_tf1_checkpoint(prefix, REGULAR)
    with pytest.raises(HarmonizerError, match="cannot read TF checkpoint"):
        load_tf1_checkpoint(tmp_path / "nothing" / "model.ckpt", REGULAR)


def test_tfjs_manifest_round_trip_with_split_layer(tmp_path):
    weights = _random_weights(DOODLE_LIKE, 2)
    assert "conv3/split_3_2/kernel" in weights and "conv3/SeparableConv2d/biases" not in weights
    manifest = write_tfjs_manifest(weights, tmp_path / "doodle", shard_bytes=1000)  # several shards
    assert len(json.loads(manifest.read_text())[0]["paths"]) > 1
    loaded = load_tfjs_manifest(tmp_path / "doodle", DOODLE_LIKE)
    for k in weights:
        np.testing.assert_array_equal(loaded[k], weights[k])
    np.testing.assert_array_equal(_outputs(DOODLE_LIKE, loaded), _outputs(DOODLE_LIKE, weights))


def test_tfjs_manifest_errors_name_the_problem(tmp_path):
    weights = _random_weights(DOODLE_LIKE, 3)
    weights.pop("conv3/split_3_1/bias")
    write_tfjs_manifest(weights, tmp_path / "m")
    with pytest.raises(HarmonizerError, match=r"model/conv3/split_3_1/bias.*missing"):
        load_tfjs_manifest(tmp_path / "m" / "weights_manifest.json", DOODLE_LIKE)
    write_tfjs_manifest(_random_weights(DOODLE_LIKE, 3), tmp_path / "t", shard_bytes=1000)
    shards = json.loads((tmp_path / "t" / "weights_manifest.json").read_text())[0]["paths"]
    (tmp_path / "t" / shards[1]).unlink()
    with pytest.raises(HarmonizerError, match=f"{shards[1]}.*missing"):
        load_tfjs_manifest(tmp_path / "t", DOODLE_LIKE)


def test_tfjs_quantized_weights_are_dequantized(tmp_path):
    config = REGULAR
    weights = _random_weights(config, 4)
    groups = [{"paths": ["q.bin"], "weights": []}]
    blob = b""
    for name, value in weights.items():
        lo, hi = float(value.min()), float(value.max())
        scale = (hi - lo) / 255 or 1.0
        q = np.round((value - lo) / scale).astype(np.uint8)
        blob += q.tobytes()
        groups[0]["weights"].append({"name": "model/" + name, "shape": list(value.shape), "dtype": "float32",
                                     "quantization": {"dtype": "uint8", "scale": scale, "min": lo}})
    (tmp_path / "q.bin").write_bytes(blob)
    (tmp_path / "weights_manifest.json").write_text(json.dumps(groups))
    loaded = load_tfjs_manifest(tmp_path, config)
    for name, value in weights.items():
        step = groups[0]["weights"][list(weights).index(name)]["quantization"]["scale"]
        assert np.abs(loaded[name] - value).max() <= step / 2 + 1e-6


def test_published_configs_have_the_released_variables():
    coconet = expected_shapes(load_config("coconet-64x128"))
    assert coconet["conv0/weights"] == (3, 3, 8, 128)
    assert coconet["conv62/weights"] == (2, 2, 128, 128)
    assert coconet["conv63/weights"] == (2, 2, 128, 4)
    assert coconet["conv5/gamma"] == (1, 1, 1, 128) and coconet["conv5/beta"] == (128,)
    doodle_config = load_config("doodle-33x128")
    doodle = expected_shapes(doodle_config)
    assert doodle["conv0/SeparableConv2d/depthwise_weights"] == (3, 3, 8, 1)
    assert doodle["conv0/SeparableConv2d/pointwise_weights"] == (1, 1, 8, 128)
    assert doodle["conv17/split_17_3/kernel"] == (32, 32)
    assert [s["index"] for s in doodle_config.layer_specs() if s["kind"] == "split"] == [17]
    dil = {s["index"]: s["dilation"] for s in doodle_config.layer_specs()}
    assert dil[1] == (1, 1) and dil[6] == (16, 32) and dil[7] == (1, 1) and dil[30] == (16, 32) and dil[31] == (1, 1)
