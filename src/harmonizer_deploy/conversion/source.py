"""Load the TensorFlow side of the pipeline: a bundled model, a `.keras` file or a SavedModel directory."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.core.extras import require
from harmonizer_deploy.music.encoding import INPUT_CHANNELS, INPUT_NAME, NUM_PITCHES, OUTPUT_NAME
from harmonizer_deploy.music.model import BUNDLED_MODEL, bundled_models, bundled_paths, context_mask_layer, load_bundled

DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


@dataclass(frozen=True)
class TensorSig:
    """One input or output as the model declares it: `None` dims are dynamic, the others fixed."""

    name: str
    dtype: str  # a numpy dtype name from DTYPES
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def spec(self) -> Any:
        import tensorflow as tf

        return tf.TensorSpec(list(self.shape), tf.as_dtype(self.dtype), name=self.name)


def is_harmonizer_signature(inputs: list[TensorSig], outputs: list[TensorSig] | None = None) -> bool:
    """The Coconet harmonizer's shape: one float input [batch, time, 46, 8] (and one output when known)."""
    if len(inputs) != 1 or (outputs is not None and len(outputs) != 1):
        return False
    sig = inputs[0]
    return sig.dtype.startswith("float") and len(sig.shape) == 4 and sig.shape[2:] == (NUM_PITCHES, INPUT_CHANNELS)


@dataclass
class SourceModel:
    """A TensorFlow model and its signature as declared (names, dtypes, shapes of every input and output).

    A model with the harmonizer's signature keeps the harmonizer's tensor names (`pianoroll_mask` → `probs`),
    so the music commands and earlier artifacts see the names they always did."""

    kind: str  # bundled | keras | saved_model
    path: str
    sha256: str
    call: Callable[..., dict[str, Any]]  # tf.function over `inputs` (positional) -> {output name: tensor}
    inputs: list[TensorSig] = field(default_factory=list)
    outputs: list[TensorSig] = field(default_factory=list)
    label: str = ""
    config: dict = field(default_factory=dict)
    keras_model: Any = None
    keep_alive: Any = None  # e.g. the loaded SavedModel, whose variables `call` references

    @property
    def is_harmonizer(self) -> bool:
        return is_harmonizer_signature(self.inputs, self.outputs)

    def run(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """TensorFlow outputs for `feeds` ({input name: array}; a bare array for a one-input model)."""
        if not isinstance(feeds, dict):
            feeds = {self.inputs[0].name: feeds}
        args = [np.asarray(feeds[sig.name]).astype(sig.dtype) for sig in self.inputs]
        return {k: np.asarray(v) for k, v in self.call(*args).items()}

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256, "label": self.label,
                "config": self.config}

    def signature(self) -> dict:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}


def _hash_paths(paths: list[Path], root: Path | None = None) -> str:
    """Content hash of files, independent of where the model lives on disk."""
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update((p.relative_to(root) if root else Path(p.name)).as_posix().encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()


def input_signature(inputs: list[TensorSig] | None = None) -> tuple:
    """tf.TensorSpecs of `inputs` (default: the harmonizer's one input, batch and time dynamic)."""
    return tuple(sig.spec() for sig in (inputs if inputs is not None else [HARMONIZER_INPUT]))


HARMONIZER_INPUT = TensorSig(INPUT_NAME, "float32", (None, None, NUM_PITCHES, INPUT_CHANNELS))


def _clean_name(name: str, taken: set[str]) -> str:
    """A tensor name TF and ONNX both accept, unique among `taken` (which it joins)."""
    base = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0]).strip("_.-") or "tensor"
    if not base[0].isalpha():
        base = "t_" + base
    out, k = base, 1
    while out in taken:
        k += 1
        out = f"{base}_{k}"
    taken.add(out)
    return out


def _dtype_name(dtype: Any, where: str) -> str:
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.removeprefix("tf.")
    if name not in DTYPES:
        raise HarmonizerError(f"{where} has dtype {name}, which the toolchain cannot feed",
                              f"export the model with numeric or bool inputs ({', '.join(DTYPES)})")
    return name


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in shape)


def _signature(in_specs: list[tuple[str, Any, Any]], out_specs: list[tuple[str, Any, Any]], where: str
               ) -> tuple[list[TensorSig], list[TensorSig]]:
    """(name, dtype, shape) triples → TensorSigs; the harmonizer keeps its own names and a dynamic time axis
    unless the model fixes it."""
    taken: set[str] = set()
    inputs = [TensorSig(_clean_name(n, taken), _dtype_name(d, f"{where} input {n}"), _dims(s)) for n, d, s in in_specs]
    outputs = [TensorSig(_clean_name(n, taken), _dtype_name(d, f"{where} output {n}"), _dims(s))
               for n, d, s in out_specs]
    if is_harmonizer_signature(inputs, outputs):
        (sig,), (out,) = inputs, outputs
        inputs = [TensorSig(INPUT_NAME, "float32", (None, *sig.shape[1:]))]
        outputs = [TensorSig(OUTPUT_NAME, out.dtype, (None, *out.shape[1:]))]
    return inputs, outputs


def keras_signature(model: Any, where: str) -> tuple[list[TensorSig], list[TensorSig]]:
    """Names, dtypes and shapes of a Keras model's inputs and outputs, as declared."""
    out_names = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    return _signature([(t.name, t.dtype, t.shape) for t in model.inputs],
                      [(n, t.dtype, t.shape) for n, t in zip(out_names, model.outputs, strict=True)], where)


def _keras_call(model: Any, inputs: list[TensorSig] | None = None, outputs: list[TensorSig] | None = None
                ) -> Callable:
    """A tf.function over the model's declared inputs returning {output name: tensor}."""
    import tensorflow as tf

    if inputs is None or outputs is None:
        inputs, outputs = keras_signature(model, "model")

    @tf.function(input_signature=input_signature(inputs))
    def call(*args):
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(result, dict):
            result = [result[k] for k in model.output_names]
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        return {sig.name: r for sig, r in zip(outputs, results, strict=True)}

    return call


def keras_source(kind: str, path: str, sha256: str, keras_model: Any, **extra: Any) -> SourceModel:
    inputs, outputs = keras_signature(keras_model, f"model {path}")
    return SourceModel(kind, path, sha256, _keras_call(keras_model, inputs, outputs), inputs, outputs,
                       keras_model=keras_model, **extra)


def load_source(model: str | Path | None = None, trust_model: bool = False) -> SourceModel:
    """Resolve MODEL as the CLI takes it: None/bundled name, a `.keras` file, or a SavedModel directory.

    A SavedModel whose graph has side effects (file I/O, PyFunc, ...) is refused unless `trust_model`."""
    require("loading a TensorFlow model", "tensorflow")
    name = str(model) if model is not None else BUNDLED_MODEL
    path = Path(name)
    if model is None or (not path.exists() and name in bundled_models()):
        keras_model, config, info = load_bundled(name)
        cfg, npz, _ = bundled_paths(name)
        return keras_source("bundled", f"bundled:{name}", _hash_paths([cfg, npz]), keras_model,
                            label=info.get("label", ""), config=config.to_dict())
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
        if not getattr(keras_model, "inputs", None) or not getattr(keras_model, "outputs", None):
            raise HarmonizerError(
                f"Keras model {path} has no declared inputs/outputs (a subclassed model that was never built)",
                "save a functional or Sequential model with an Input layer, or export a SavedModel with a signature",
            )
        return keras_source("keras", str(path), _hash_paths([path]), keras_model)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_saved_model(path, trust_model)
    raise HarmonizerError(
        f"unrecognised model {path}", "pass a .keras file or a SavedModel directory (one with saved_model.pb)"
    )


def _load_saved_model(path: Path, trust_model: bool = False) -> SourceModel:
    import tensorflow as tf

    from harmonizer_deploy.conversion.trust import check_saved_model

    check_saved_model(path, trust_model)  # before TensorFlow loads (and later runs) any of it
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise HarmonizerError(
            f"cannot load SavedModel {path}: {reason(exc)}", "re-export the SavedModel"
        ) from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise HarmonizerError(f"SavedModel {path} has no 'serving_default' signature", "export with a signature")
    arg_specs = dict(signature.structured_input_signature[1])
    out_specs = dict(signature.structured_outputs)
    if not arg_specs or not out_specs:
        raise HarmonizerError(f"SavedModel {path} serving signature has no inputs or no outputs",
                              "export with a signature that takes and returns tensors")
    arg_names, out_keys = list(arg_specs), list(out_specs)
    inputs, outputs = _signature([(n, s.dtype, s.shape) for n, s in arg_specs.items()],
                                 [(k, s.dtype, s.shape) for k, s in out_specs.items()], f"SavedModel {path}")

    @tf.function(input_signature=input_signature(inputs))
    def call(*args):
        result = signature(**dict(zip(arg_names, args, strict=True)))
        return {sig.name: result[key] for sig, key in zip(outputs, out_keys, strict=True)}

    files = [p for p in path.rglob("*") if p.is_file()]
    return SourceModel("saved_model", str(path), _hash_paths(files, path), call, inputs, outputs, keep_alive=loaded)
