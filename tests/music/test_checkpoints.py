"""Loaders for Magenta's released formats: self-written checkpoints round-trip to identical outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ---------------------------------------------------------------------------------------------------------
# A TF.js manifest is hostile input: validated whole before any shard byte is read (issue 15 §2).

SHARED_DOODLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "bach-doodle"


def _quantized_manifest(directory: Path, seed: int = 5) -> list:
    """A valid uint8-quantized manifest (the Doodle's form) for REGULAR; returns its JSON."""
    write_tfjs_manifest(_random_weights(REGULAR, seed), directory, quantize="uint8")
    return json.loads((directory / "weights_manifest.json").read_text())


def _rewrite(directory: Path, groups: object) -> Path:
    (directory / "weights_manifest.json").write_text(json.dumps(groups))
    return directory


def test_quantized_writer_round_trips_within_half_a_step(tmp_path):
    weights = _random_weights(REGULAR, 6)
    groups = _quantized_manifest(tmp_path)
    loaded = load_tfjs_manifest(tmp_path, REGULAR)
    for spec in groups[0]["weights"]:
        name = spec["name"].removeprefix("model/")
        assert np.abs(loaded[name] - _random_weights(REGULAR, 5)[name]).max() <= spec["quantization"]["scale"]
    assert set(loaded) == set(weights)


def _mutated(tmp_path: Path, change) -> Path:
    groups = _quantized_manifest(tmp_path)
    change(groups)
    return _rewrite(tmp_path, groups)


@pytest.mark.parametrize(("change", "message"), [
    (lambda g: g[0]["weights"][3].update(shape=[-4]), r"shape \[-4\].*non-negative integers"),
    (lambda g: g[0]["weights"][3].update(shape="3x3"), r"shape '3x3'"),
    (lambda g: g[0]["weights"][3].update(shape=[3.0, 3, 8, 8]), r"shape \[3\.0, 3, 8, 8\]"),
    (lambda g: g[0]["weights"][3].update(shape=[True, 3]), r"shape \[True, 3\]"),
    (lambda g: g[0]["weights"][2].pop("name"), r"weight 2 has no name"),
    (lambda g: g[0]["weights"][2].update(name=7), r"weight 2 has no name"),
    (lambda g: g[0]["weights"][1].update(dtype="complex64"), r"dtype 'complex64'"),
    (lambda g: g[0]["weights"][1]["quantization"].update(dtype="int4"), r"quantization dtype 'int4'"),
    (lambda g: g[0]["weights"][1]["quantization"].pop("scale"), r"uint8 quantization needs a finite number 'scale'"),
    (lambda g: g[0]["weights"][1]["quantization"].update(min="0"), r"needs a finite number 'min'"),
    (lambda g: g[0]["weights"][1]["quantization"].update(scale=float("nan")), r"finite number 'scale'"),
    (lambda g: g[0]["weights"][1].update(dtype="bool"), r"is bool but quantized"),
    (lambda g: g[0]["weights"].append(dict(g[0]["weights"][0])), r"listed twice"),
    (lambda g: g[0].update(paths=[]), r"no shard paths"),
    (lambda g: g[0].update(paths=["../../secret.bin"]), r"'\.\./\.\./secret\.bin' leaves the manifest's folder"),
    (lambda g: g[0].update(paths=["sub/../../secret.bin"]), r"leaves the manifest's folder"),
    (lambda g: g[0].update(paths=["/etc/passwd"]), r"'/etc/passwd' is absolute"),
    (lambda g: g[0].update(paths=["C:\\secret.bin"]), r"is absolute"),
    (lambda g: g[0].update(paths=[3]), r"shard path 3 is not a file name"),
    (lambda g: g.clear(), r"not a non-empty list"),
])
def test_each_bad_manifest_is_named_before_reading(tmp_path, change, message):
    (tmp_path.parent / "secret.bin").write_bytes(b"\0" * 4096)
    folder = _mutated(tmp_path / "m", change)
    with pytest.raises(HarmonizerError, match=message):
        load_tfjs_manifest(folder, REGULAR)


@pytest.mark.parametrize(("extra", "message"), [(13, "13 bytes longer"), (-1, "1 bytes shorter")])
def test_shard_length_must_match_the_manifest_exactly(tmp_path, extra, message):
    _quantized_manifest(tmp_path)
    shard = tmp_path / "group1-shard1of1"
    data = shard.read_bytes()
    shard.write_bytes(data + b"\r" * extra if extra > 0 else data[:extra])
    with pytest.raises(HarmonizerError, match=message):
        load_tfjs_manifest(tmp_path, REGULAR)


def test_a_symlinked_shard_may_not_leave_the_folder(tmp_path):
    _quantized_manifest(tmp_path / "m")
    outside = tmp_path / "outside.bin"
    (tmp_path / "m" / "group1-shard1of1").rename(outside)
    (tmp_path / "m" / "group1-shard1of1").symlink_to(outside)
    with pytest.raises(HarmonizerError, match="outside the manifest's folder"):
        load_tfjs_manifest(tmp_path / "m", REGULAR)
    # a link that stays inside the folder is fine
    inside = tmp_path / "m" / "real.bin"
    outside.rename(inside)
    (tmp_path / "m" / "group1-shard1of1").unlink()
    (tmp_path / "m" / "group1-shard1of1").symlink_to(inside)
    assert len(load_tfjs_manifest(tmp_path / "m", REGULAR)) == len(expected_shapes(REGULAR))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats()
    | st.sampled_from(["uint8", "uint16", "float16", "float32", "int32", "bool", "../x", "/etc/passwd", "",
                       "group1-shard1of1", "model/conv0/weights"]) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "shape", "dtype", "quantization", "scale", "min", "paths",
                                       "weights"]) | st.text(max_size=4), children, max_size=4),
    max_leaves=8,
)


def _apply(obj: object, route: list[int], value: object, delete: bool) -> object:
    parent, key, node = None, None, obj
    for r in route:
        if isinstance(node, list) and node:
            parent, key = node, r % len(node)
        elif isinstance(node, dict) and node:
            parent, key = node, sorted(node)[r % len(node)]
        else:
            break
        node = parent[key]
    if parent is None:
        return value
    if delete:
        parent.pop(key)
    else:
        parent[key] = value
    return obj


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(st.tuples(st.lists(st.integers(0, 300), max_size=5), _json, st.booleans()),
                          min_size=1, max_size=3),
       tail=st.integers(-3, 3))
def test_mutated_manifests_give_a_clear_error_or_weights(tmp_path_factory, mutations, tail):
    """Whatever a manifest says, loading ends in weights or a HarmonizerError — never another exception."""
    folder = tmp_path_factory.mktemp("fuzz")
    groups: object = _quantized_manifest(folder)
    for route, value, delete in mutations:
        groups = _apply(groups, route, value, delete)
    _rewrite(folder, groups)
    shard = folder / "group1-shard1of1"
    data = shard.read_bytes()
    shard.write_bytes(data + b"\r" * tail if tail >= 0 else data[:tail])
    try:
        loaded = load_tfjs_manifest(folder, REGULAR)
    except HarmonizerError as exc:
        assert exc.problem and "\n" not in exc.problem
    else:
        assert set(loaded) == set(expected_shapes(REGULAR)) and tail == 0


@pytest.mark.skipif(not (SHARED_DOODLE / "damaged").is_dir(), reason="../shared/data/bach-doodle is not present")
def test_import_weights_refuses_the_damaged_doodle_shard(tmp_path):
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    result = CliRunner().invoke(app, ["import-weights", str(SHARED_DOODLE / "damaged"), "--config", "doodle-33x128",
                                      "-o", str(tmp_path / "w.npz")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "13 bytes longer than the manifest says" in text
    assert "Traceback" not in result.output and not (tmp_path / "w.npz").exists()
