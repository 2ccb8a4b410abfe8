"""The Coconet harmonizer network in Keras, and its weights under Coconet's own TF1 variable names.

Weights are kept as `{name: array}` with the names Magenta's checkpoints use (`conv3/weights`,
`conv3/gamma`, ...), so the bundled `.npz`, a TF1 checkpoint and a TF.js manifest all load through
the same mapping.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.music.config import ModelConfig, load_config
from harmonizer_deploy.music.encoding import INPUT_CHANNELS, INPUT_NAME, NUM_PITCHES, NUM_VOICES, OUTPUT_NAME

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WEIGHTS_DIR = Path(__file__).parent / "weights"
# The model every command uses when none is named (convert, harmonize, make, page, serve): the Bach Doodle's own.
BUNDLED_MODEL = "bach-doodle"
# The small model trained by this project: what other models' scores are set next to.
REFERENCE_MODEL = "default"
TFJS_MANIFEST = "weights_manifest.json"
# sha256 of every file of a bundled model kept in TF.js form, checked each time it is loaded.
BUNDLED_SHA256 = {
    "bach-doodle": {
        "weights_manifest.json": "1b84f8999523b08c7aa5086b13b2aa444a52bbc466c7b4918878bf7190cc05a4",
        "group1-shard1of1": "87f5d100dbdab7a42e0b89e1a04362e5f1c5cb18dcd2536b79ddf0cbd57545c7",
    },
}


def _keras():
    import keras

    return keras


def build_model(config: ModelConfig) -> Any:
    """Build the Keras functional model for `config` (untrained; see `set_weights`)."""
    keras = _keras()
    layers = keras.layers
    x_in = keras.Input((None, NUM_PITCHES, INPUT_CHANNELS), name=INPUT_NAME)
    h = x_in
    if config.mask_indicates_context:
        h = context_mask_layer()(name="context_mask")(h)
    saved = None
    for spec in config.layer_specs():
        i = spec["index"]
        if config.use_residual and i % 2 == 1:
            saved = h
        common = {"padding": "same", "dilation_rate": spec["dilation"]}
        if spec["kind"] == "regular":
            y = layers.Conv2D(spec["out"], spec["kernel"], use_bias=False, name=f"conv{i}", **common)(h)
        elif spec["kind"] == "separable":
            y = layers.SeparableConv2D(
                spec["out"], spec["kernel"], depth_multiplier=config.sep_conv_depth_multiplier,
                name=f"conv{i}", **common,
            )(h)
        else:  # depthwise, then the pointwise conv split in dense groups (a grouped 1×1 conv)
            # Bach Doodle: a bias-free depthwise conv; the biases live in the split pointwise groups.
            y = layers.DepthwiseConv2D(
                spec["kernel"], depth_multiplier=config.sep_conv_depth_multiplier, name=f"conv{i}_depthwise",
                use_bias=False, **common,
            )(h)
            y = layers.Conv2D(spec["out"], 1, groups=config.num_pointwise_splits, name=f"conv{i}_split")(y)
        y = layers.BatchNormalization(
            epsilon=config.batch_norm_epsilon, name=f"conv{i}_bn",
            gamma_initializer=keras.initializers.Constant(0.1),
        )(y)
        if spec["residual"] and saved is not None and saved.shape[-1] == y.shape[-1]:
            y = layers.Add(name=f"conv{i}_residual")([y, saved])
        h = layers.ReLU(name=f"conv{i}_relu")(y) if spec["activation"] else y
        if i == config.melody_attention_after:
            from harmonizer_deploy.music.custom_layers import MelodyHarmonyAttention

            h = MelodyHarmonyAttention(key_dim=config.attention_key_dim, name="melody_attention")(h)
        if i == config.logsumexp_pool_after:
            from harmonizer_deploy.music.custom_layers import CausalLogSumExpPool

            h = CausalLogSumExpPool(name="logsumexp_pool")(h)
    if config.pitch_range_softmax:
        from harmonizer_deploy.music.custom_layers import PitchMaskedSoftmax

        probs = PitchMaskedSoftmax(name=OUTPUT_NAME)(h)
    else:
        probs = layers.Softmax(axis=2, name=OUTPUT_NAME)(h)
    return keras.Model(x_in, probs, name=f"coconet_{config.name}".replace("-", "_"))


@functools.cache
def context_mask_layer() -> Any:
    """The one custom Keras layer of the Doodle config, registered so `.keras` files round-trip."""
    keras = _keras()

    @keras.saving.register_keras_serializable(package="harmonizer_deploy")
    class ContextMask(keras.layers.Layer):
        """Bach Doodle convention: the network sees 1 − mask (mask hot where the value is known)."""

        def call(self, x):
            ops = keras.ops
            return ops.concatenate([x[..., :NUM_VOICES], 1.0 - x[..., NUM_VOICES:]], axis=-1)

    return ContextMask


# ---------------------------------------------------------------------------------------------------------
# Weights under Coconet's names


def _weight_slots(config: ModelConfig) -> list[tuple[str, str, str, tuple[int, ...], Any]]:
    """(coconet name, keras layer, keras weight attr, expected shape, slice-or-None) for every variable."""
    slots: list[tuple[str, str, str, tuple[int, ...], Any]] = []
    m = config.sep_conv_depth_multiplier
    for spec in config.layer_specs():
        i, k, cin, cout = spec["index"], spec["kernel"], spec["in"], spec["out"]
        p = f"conv{i}"
        if spec["kind"] == "regular":
            slots.append((f"{p}/weights", p, "kernel", (k, k, cin, cout), None))
        elif spec["kind"] == "separable":
            s = f"{p}/SeparableConv2d"
            slots += [
                (f"{s}/depthwise_weights", p, "depthwise_kernel", (k, k, cin, m), None),
                (f"{s}/pointwise_weights", p, "pointwise_kernel", (1, 1, cin * m, cout), None),
                (f"{s}/biases", p, "bias", (cout,), None),
            ]
        else:
            s = f"{p}/SeparableConv2d"
            slots.append((f"{s}/depthwise_weights", f"{p}_depthwise", "kernel", (k, k, cin, m), None))
            groups = config.num_pointwise_splits
            gin, gout = cin * m // groups, cout // groups
            for j in range(groups):
                cols = slice(j * gout, (j + 1) * gout)
                slots += [
                    (f"{p}/split_{i}_{j}/kernel", f"{p}_split", "kernel", (gin, gout), (0, 0, slice(None), cols)),
                    (f"{p}/split_{i}_{j}/bias", f"{p}_split", "bias", (gout,), cols),
                ]
        bn = f"{p}_bn"
        slots += [
            (f"{p}/gamma", bn, "gamma", (1, 1, 1, cout), None),
            (f"{p}/beta", bn, "beta", (cout,), None),
            (f"{p}/popmean", bn, "moving_mean", (1, 1, 1, cout), None),
            (f"{p}/popvariance", bn, "moving_variance", (1, 1, 1, cout), None),
        ]
        if i == config.melody_attention_after:
            d = config.attention_key_dim
            slots += [("melody_attention/query", "melody_attention", "wq", (cout, d), None),
                      ("melody_attention/key", "melody_attention", "wk", (cout, d), None),
                      ("melody_attention/value", "melody_attention", "wv", (cout, cout), None)]
    return slots


def weight_names(config: ModelConfig) -> list[str]:
    return [slot[0] for slot in _weight_slots(config)]


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {name: shape for name, _, _, shape, _ in _weight_slots(config)}


def get_weights(model: Any, config: ModelConfig) -> dict[str, np.ndarray]:
    """Read the Keras model's variables out under Coconet's names and shapes."""
    out = {}
    for name, layer, attr, shape, index in _weight_slots(config):
        value = np.asarray(getattr(model.get_layer(layer), attr).numpy())
        if index is not None:
            value = value[index]
        out[name] = value.reshape(shape).astype(np.float32)
    return out


def set_weights(model: Any, config: ModelConfig, weights: Mapping[str, np.ndarray], source: str = "") -> None:
    """Assign Coconet-named weights to the Keras model; a missing or mis-shaped variable is named."""
    where = f" in {source}" if source else ""
    pending: dict[tuple[str, str], np.ndarray] = {}
    for name, layer, attr, shape, index in _weight_slots(config):
        if name not in weights:
            raise HarmonizerError(
                f"variable {name!r} missing{where} (model config {config.name!r} needs {len(_weight_slots(config))} "
                "variables)", "check that the checkpoint matches the model config (layers, filters, separable)"
            )
        value = np.asarray(weights[name], dtype=np.float32)
        if value.shape != shape:
            raise HarmonizerError(
                f"variable {name!r}{where} has shape {list(value.shape)}, expected {list(shape)}",
                "check that the checkpoint matches the model config (layers, filters, separable)",
            )
        variable = getattr(model.get_layer(layer), attr)
        key = (layer, attr)
        if key not in pending:
            pending[key] = np.zeros(tuple(variable.shape), dtype=np.float32)
        if index is None:
            pending[key] = value.reshape(tuple(variable.shape))
        else:
            pending[key][index] = value
    for (layer, attr), value in pending.items():
        getattr(model.get_layer(layer), attr).assign(value)


# ---------------------------------------------------------------------------------------------------------
# Bundled models


def bundled_models() -> list[str]:
    """Names of the bundled models: `NAME.npz` (float32 arrays) or `NAME/weights_manifest.json` (TF.js)."""
    npz = {p.stem for p in WEIGHTS_DIR.glob("*.npz")}
    tfjs = {p.parent.name for p in WEIGHTS_DIR.glob(f"*/{TFJS_MANIFEST}")}
    return sorted(npz | tfjs)


def _tfjs_dir(name: str) -> Path:
    return WEIGHTS_DIR / name


def bundled_paths(name: str) -> tuple[Path, Path, Path]:
    """(config toml, weights file, info json) of a bundled model; the weights file is the `.npz`, or for a
    model kept in TF.js form its binary shard (the manifest is pinned by BUNDLED_SHA256 as well)."""
    if (_tfjs_dir(name) / TFJS_MANIFEST).is_file():
        return WEIGHTS_DIR / f"{name}.toml", _tfjs_dir(name) / "group1-shard1of1", WEIGHTS_DIR / f"{name}.json"
    return WEIGHTS_DIR / f"{name}.toml", WEIGHTS_DIR / f"{name}.npz", WEIGHTS_DIR / f"{name}.json"


def load_weights_npz(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise HarmonizerError(f"cannot read weights {path}: {reason(exc)}",
                              "pass a .npz written by harmonizer-deploy") from exc


def check_bundled_files(name: str) -> None:
    """Refuse a bundled TF.js model whose files differ from the ones shipped (damaged or altered install)."""
    from harmonizer_deploy.core.artifacts import sha256_file

    for file, expected in BUNDLED_SHA256.get(name, {}).items():
        path = _tfjs_dir(name) / file
        actual = sha256_file(path) if path.is_file() else "missing"
        if actual != expected:
            raise HarmonizerError(
                f"bundled model {name!r}: {path} has sha256 {actual[:16]}…, expected {expected[:16]}…",
                "the installation is damaged; reinstall harmonizer-deploy",
            )


def bundled_weights(name: str, config: ModelConfig) -> dict[str, np.ndarray]:
    """Coconet-named float32 arrays of a bundled model (TF.js ones dequantized here, after the sha256 check)."""
    if (_tfjs_dir(name) / TFJS_MANIFEST).is_file():
        from harmonizer_deploy.music.checkpoints import load_tfjs_manifest

        check_bundled_files(name)
        return load_tfjs_manifest(_tfjs_dir(name), config)
    return load_weights_npz(bundled_paths(name)[1])


def load_bundled(name: str = BUNDLED_MODEL) -> tuple[Any, ModelConfig, dict]:
    """The bundled Keras model with its weights, config and provenance info."""
    if name not in bundled_models():
        raise HarmonizerError(
            f"no bundled model named {name!r}", f"bundled models: {', '.join(bundled_models()) or 'none'}"
        )
    cfg_path, weights_path, info_path = bundled_paths(name)
    config = load_config(cfg_path)
    weights = bundled_weights(name, config)
    model = build_model(config)
    set_weights(model, config, weights, source=str(weights_path))
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return model, config, info


def seeded_weights(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """A seeded initialisation (He-normal convs, Coconet's gamma=0.1): a stand-in until trained weights exist."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return get_weights(build_model(config), config)
