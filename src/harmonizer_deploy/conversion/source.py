"""Load the TensorFlow side of the pipeline: a bundled model, a `.keras` file or a SavedModel directory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.music.encoding import INPUT_CHANNELS, INPUT_NAME, NUM_PITCHES, OUTPUT_NAME
from harmonizer_deploy.music.model import BUNDLED_MODEL, bundled_models, bundled_paths, context_mask_layer, load_bundled


@dataclass
class SourceModel:
    """A TensorFlow model with one input `[batch, time, 46, 8]` and the harmonizer's output."""

    kind: str  # bundled | keras | saved_model
    path: str
    sha256: str
    call: Callable[[Any], dict[str, Any]]  # tf.function: input tensor -> {output name: tensor}
    label: str = ""
    config: dict = field(default_factory=dict)
    keras_model: Any = None
    keep_alive: Any = None  # e.g. the loaded SavedModel, whose variables `call` references

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.call(x).items()}

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256, "label": self.label,
                "config": self.config}


def _hash_paths(paths: list[Path], root: Path | None = None) -> str:
    """Content hash of files, independent of where the model lives on disk."""
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update((p.relative_to(root) if root else Path(p.name)).as_posix().encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()


def input_signature():
    import tensorflow as tf

    return (tf.TensorSpec([None, None, NUM_PITCHES, INPUT_CHANNELS], tf.float32, name=INPUT_NAME),)


def _keras_call(model: Any) -> Callable:
    import tensorflow as tf

    @tf.function(input_signature=input_signature())
    def call(x):
        return {OUTPUT_NAME: model(x, training=False)}

    return call


def load_source(model: str | Path | None = None) -> SourceModel:
    """Resolve MODEL as the CLI takes it: None/bundled name, a `.keras` file, or a SavedModel directory."""
    name = str(model) if model is not None else BUNDLED_MODEL
    path = Path(name)
    if model is None or (not path.exists() and name in bundled_models()):
        keras_model, config, info = load_bundled(name)
        cfg, npz, _ = bundled_paths(name)
        return SourceModel("bundled", f"bundled:{name}", _hash_paths([cfg, npz]), _keras_call(keras_model),
                           info.get("label", ""), config.to_dict(), keras_model)
    if not path.exists():
        raise HarmonizerError(
            f"model not found: {path}",
            f"pass a .keras file, a SavedModel directory, or a bundled model ({', '.join(bundled_models())})",
        )
    if path.is_file() and path.suffix == ".keras":
        import keras

        context_mask_layer()  # registers the custom layers so files using them deserialize
        from harmonizer_deploy.music import custom_layers as layers  # noqa: F401
        try:
            keras_model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # keras raises many types for corrupt archives
            raise HarmonizerError(
                f"cannot load Keras model {path}: {reason(exc)}",
                "the file is corrupt or not a Keras 3 .keras archive; re-export it with model.save('x.keras')",
            ) from exc
        _check_keras_io(keras_model, path)
        return SourceModel("keras", str(path), _hash_paths([path]), _keras_call(keras_model), keras_model=keras_model)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_saved_model(path)
    raise HarmonizerError(
        f"unrecognised model {path}", "pass a .keras file or a SavedModel directory (one with saved_model.pb)"
    )


def _check_keras_io(keras_model: Any, path: Path) -> None:
    shape = tuple(keras_model.inputs[0].shape[1:]) if len(keras_model.inputs) == 1 else None
    if shape is None or shape[1:] != (NUM_PITCHES, INPUT_CHANNELS):
        raise HarmonizerError(
            f"model {path} takes inputs {[tuple(i.shape) for i in keras_model.inputs]}, "
            f"expected one input [batch, time, {NUM_PITCHES}, {INPUT_CHANNELS}]",
            "export the harmonizer network itself (pianoroll + mask in, per-voice pitch softmax out)",
        )


def _load_saved_model(path: Path) -> SourceModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise HarmonizerError(
            f"cannot load SavedModel {path}: {reason(exc)}", "re-export the SavedModel"
        ) from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise HarmonizerError(f"SavedModel {path} has no 'serving_default' signature", "export with a signature")
    arg_specs = signature.structured_input_signature[1]
    if len(arg_specs) != 1:
        raise HarmonizerError(f"SavedModel {path} takes {len(arg_specs)} inputs, expected 1", "export the harmonizer")
    (arg_name, spec), = arg_specs.items()
    if tuple(spec.shape[2:]) != (NUM_PITCHES, INPUT_CHANNELS):
        raise HarmonizerError(
            f"SavedModel {path} input {arg_name} has shape {spec.shape}, expected [batch, time, 46, 8]",
            "export the harmonizer network itself",
        )
    out_names = list(signature.structured_outputs)

    @tf.function(input_signature=input_signature())
    def call(x):
        result = signature(**{arg_name: x})
        key = OUTPUT_NAME if OUTPUT_NAME in result else out_names[0]
        return {OUTPUT_NAME: result[key]}

    files = [p for p in path.rglob("*") if p.is_file()]
    return SourceModel("saved_model", str(path), _hash_paths(files, path), call, keep_alive=loaded)
