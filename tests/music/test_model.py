"""The Keras Coconet: architecture facts from Magenta's code, and weights under Coconet's names."""

from __future__ import annotations

import numpy as np
import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.config import ModelConfig, load_config
from harmonizer_deploy.music.encoding import realistic_inputs
from harmonizer_deploy.music.model import build_model, expected_shapes, get_weights, seeded_weights, set_weights


def assert_round_trip(config: ModelConfig, weights: dict) -> None:
    model = build_model(config)
    set_weights(model, config, weights)
    for name, value in get_weights(model, config).items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)


def test_layer_specs_follow_coconet():
    specs = load_config("default").layer_specs()
    assert len(specs) == 16
    assert [s["kernel"] for s in specs[-2:]] == [2, 2]  # two 2×2 convs at the end
    assert specs[0]["in"] == 8 and specs[-1]["out"] == 4
    assert not specs[-1]["activation"]  # logits layer has no ReLU
    # residual every second layer, never on the first or the last
    assert [s["index"] for s in specs if s["residual"]] == [2, 4, 6, 8, 10, 12, 14]


def test_model_outputs_distributions_over_pitch(small_config):
    model = build_model(small_config)
    probs = model(realistic_inputs(0, 2, 8)).numpy()
    assert probs.shape == (2, 8, 46, 4)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)


def test_weights_round_trip_by_coconet_name(small_config):
    weights = seeded_weights(small_config, seed=3)
    assert set(weights) == set(expected_shapes(small_config))
    assert weights["conv0/weights"].shape == (3, 3, 8, 8)
    assert weights["conv5/weights"].shape == (2, 2, 8, 4)
    assert weights["conv2/gamma"].shape == (1, 1, 1, 8)
    assert_round_trip(small_config, weights)


def test_missing_and_misshaped_variables_are_named(small_config):
    model = build_model(small_config)
    weights = seeded_weights(small_config, seed=0)
    del weights["conv3/popmean"]
    with pytest.raises(HarmonizerError, match="conv3/popmean"):
        set_weights(model, small_config, weights)
    weights = seeded_weights(small_config, seed=0)
    weights["conv1/weights"] = np.zeros((3, 3, 8, 9), np.float32)
    with pytest.raises(HarmonizerError, match=r"conv1/weights.*\[3, 3, 8, 9\].*\[3, 3, 8, 8\]"):
        set_weights(model, small_config, weights)


def test_separable_and_split_layers_round_trip():
    config = ModelConfig(name="sep", num_layers=6, num_filters=8, separable=True, num_initial_regular_conv_layers=1,
                         dilations=((1, 1), (2, 2)), pointwise_split_layers=(3,), num_pointwise_splits=4)
    weights = seeded_weights(config, seed=2)
    assert weights["conv3/split_3_1/kernel"].shape == (2, 2)
    assert weights["conv2/SeparableConv2d/pointwise_weights"].shape == (1, 1, 8, 8)
    assert_round_trip(config, weights)


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("num_layers = 8\nwidth = 3\n")
    with pytest.raises(HarmonizerError, match="unknown keys width"):
        load_config(bad)
    with pytest.raises(HarmonizerError, match="model config not found"):
        load_config("no-such-config")
