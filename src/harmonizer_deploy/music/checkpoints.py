"""Magenta's released weight formats ↔ Coconet-named arrays.

* TF1 checkpoint (Magenta's Python Coconet): variables `model/conv{i}/weights`, `.../gamma`, ... read with
  `tf.train.load_checkpoint`; optimizer slots and other extras are ignored.
* TF.js weights manifest (the Bach Doodle in magenta.js): `weights_manifest.json` listing groups of binary
  shards; each group's shards are concatenated and its weights read in order (float32/int32, or
  uint8/uint16/float16 quantized with scale/min).

Both return `{name without "model/": array}` for `model.set_weights`; the writers exist so tests (and users
who want to hand weights back to Magenta's tools) produce files with the same names, shapes and dtypes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.config import ModelConfig
from harmonizer_deploy.music.model import expected_shapes

SCOPE = "model/"
MANIFEST = "weights_manifest.json"
_FIX = "check that the checkpoint matches the model config (--config: layers, filters, separable)"


def _select(found: Mapping[str, np.ndarray], config: ModelConfig, source: str) -> dict[str, np.ndarray]:
    """Pick the config's variables out of `found` (names with the `model/` scope), naming any missing one."""
    out = {}
    for name, shape in expected_shapes(config).items():
        key = SCOPE + name
        if key not in found:
            near = sorted(k for k in found if k.startswith(SCOPE + name.split("/")[0] + "/"))
            hint = f" (that layer has: {', '.join(near)})" if near else ""
            raise HarmonizerError(f"variable {key!r} missing in {source}{hint}", _FIX)
        value = np.asarray(found[key])
        if tuple(value.shape) != shape:
            raise HarmonizerError(
                f"variable {key!r} in {source} has shape {list(value.shape)}, expected {list(shape)}", _FIX
            )
        out[name] = value.astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------------------
# TF1 checkpoints


def load_tf1_checkpoint(path: str | Path, config: ModelConfig) -> dict[str, np.ndarray]:
    """Read a TF1 checkpoint (prefix, `.index` file or directory with a `checkpoint` file)."""
    import tensorflow as tf

    path = Path(path)
    prefix = str(path.with_suffix("")) if path.suffix == ".index" else str(path)
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))
        if latest is None:
            raise HarmonizerError(f"no TF checkpoint in directory {path}", "pass the checkpoint prefix (…/model.ckpt)")
        prefix = latest
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise HarmonizerError(
            f"cannot read TF checkpoint {prefix}: {str(exc).splitlines()[0]}",
            "pass the checkpoint prefix (the path without .index/.data-*)",
        ) from exc
    names = reader.get_variable_to_shape_map()
    found = {name: reader.get_tensor(name) for name in names if name.startswith(SCOPE)}
    return _select(found, config, f"TF checkpoint {prefix}")


def write_tf1_checkpoint(weights: Mapping[str, np.ndarray], prefix: str | Path) -> Path:
    """Write Coconet-named arrays as a TF1 checkpoint under the `model/` scope (Magenta's layout)."""
    import tensorflow as tf

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(np.asarray(v), name=SCOPE + k) for k, v in weights.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_meta_graph=False)
    return prefix


# ---------------------------------------------------------------------------------------------------------
# TF.js weights manifests
#
# The manifest is hostile input: it says where to read (shard paths) and how much (shapes), so the whole of it
# is validated before a single shard byte is read. The format (tfjs-core `io/types.ts`): a list of groups
# {"paths": [shard file, ...], "weights": [{"name", "shape", "dtype", "quantization"?}, ...]}; a group's
# shards are concatenated and its weights laid out back to back. Quantized weights store `dtype` as the
# logical type (float32/int32) and `quantization: {"dtype": "uint8"|"uint16", "scale", "min"}` (value =
# q·scale + min) or `{"dtype": "float16"}` (no scale/min).

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}
_QUANTIZABLE = ("float32", "int32")
MAX_MANIFEST_BYTES = 64 << 20
_BAD_MANIFEST = "pass an intact TF.js weights_manifest.json (as written by tensorflowjs_converter)"


@dataclass(frozen=True)
class TfjsWeight:
    """One validated manifest entry: where its bytes are in the group and how to decode them."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # logical dtype
    stored: Any  # numpy dtype of the bytes in the shard
    scale: float | None
    minimum: float | None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.stored).itemsize


@dataclass(frozen=True)
class TfjsGroup:
    shards: tuple[Path, ...]
    weights: tuple[TfjsWeight, ...]


def _manifest_path(path: Path) -> Path:
    return path / MANIFEST if path.is_dir() else path


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shard_path(folder: Path, entry: object, where: str) -> Path:
    """A shard path that stays inside the manifest's folder: relative, no `..`, no link leading out of it."""
    if not isinstance(entry, str) or not entry or "\x00" in entry:
        raise HarmonizerError(f"{where}: shard path {entry!r} is not a file name", _BAD_MANIFEST)
    rel = PurePosixPath(entry)
    if rel.is_absolute() or PureWindowsPath(entry).is_absolute() or PureWindowsPath(entry).drive:
        raise HarmonizerError(f"{where}: shard path {entry!r} is absolute; shards must lie next to the manifest",
                              "keep the shards in the manifest's folder and list them by relative name")
    if ".." in rel.parts or ".." in PureWindowsPath(entry).parts:
        raise HarmonizerError(f"{where}: shard path {entry!r} leaves the manifest's folder",
                              "keep the shards in the manifest's folder and list them by relative name")
    root = folder.resolve()
    target = folder / rel
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise HarmonizerError(f"{where}: shard {entry!r} is a link to {resolved}, outside the manifest's folder",
                              "copy the shard itself next to the manifest")
    if not resolved.is_file():
        raise HarmonizerError(f"TF.js shard {target} (listed in {where}) is missing or not a file",
                              "download every shard next to the manifest")
    return target


def _weight(spec: object, where: str) -> TfjsWeight:
    if not isinstance(spec, dict):
        raise HarmonizerError(f"{where} is not an object", _BAD_MANIFEST)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise HarmonizerError(f"{where} has no name (a non-empty string)", _BAD_MANIFEST)
    where = f"{where} ({name!r})"
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise HarmonizerError(f"{where} has shape {shape!r}; a shape is a list of non-negative integers",
                              _BAD_MANIFEST)
    if math.prod(shape) > MAX_MANIFEST_BYTES * 1024:
        raise HarmonizerError(f"{where} has an implausible shape {shape}", _BAD_MANIFEST)
    dtype = spec.get("dtype")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise HarmonizerError(f"{where} has dtype {dtype!r}; supported: {', '.join(_DTYPES)}",
                              "convert the model with float32 weights")
    quant = spec.get("quantization")
    if quant is None:
        return TfjsWeight(name, tuple(shape), dtype, _DTYPES[dtype], None, None)
    if not isinstance(quant, dict):
        raise HarmonizerError(f"{where} has quantization {quant!r}, not an object", _BAD_MANIFEST)
    qdtype = quant.get("dtype")
    if not isinstance(qdtype, str) or qdtype not in _QUANT:
        raise HarmonizerError(f"{where} has quantization dtype {qdtype!r}; TF.js defines {', '.join(_QUANT)}",
                              _BAD_MANIFEST)
    if dtype not in _QUANTIZABLE:
        raise HarmonizerError(f"{where} is {dtype} but quantized; TF.js quantizes only float32/int32",
                              _BAD_MANIFEST)
    if qdtype == "float16":
        return TfjsWeight(name, tuple(shape), dtype, _QUANT[qdtype], None, None)
    for key in ("scale", "min"):
        if not _is_number(quant.get(key)):
            raise HarmonizerError(f"{where}: {qdtype} quantization needs a finite number {key!r}, got "
                                  f"{quant.get(key)!r}", _BAD_MANIFEST)
    return TfjsWeight(name, tuple(shape), dtype, _QUANT[qdtype], float(quant["scale"]), float(quant["min"]))


def read_tfjs_manifest(path: str | Path) -> list[TfjsGroup]:
    """Validate a whole TF.js manifest (types, shapes, dtypes, shard paths, byte counts); read no shard data.

    Raises a HarmonizerError naming the first problem. The byte count must match exactly: a shard longer
    than the weights it holds is as damaged as a short one (a CRLF conversion of the binary adds bytes, and
    reading it anyway shifts every later weight).
    """
    manifest = _manifest_path(Path(path))
    if not manifest.is_file():
        raise HarmonizerError(f"TF.js manifest not found: {manifest}", f"pass {MANIFEST} or its directory")
    if manifest.stat().st_size > MAX_MANIFEST_BYTES:
        raise HarmonizerError(f"TF.js manifest {manifest} is larger than {MAX_MANIFEST_BYTES >> 20} MiB",
                              _BAD_MANIFEST)
    try:
        groups = json.loads(manifest.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise HarmonizerError(f"TF.js manifest {manifest} is not valid JSON ({str(exc)[:120]})",
                              "re-download it") from exc
    if not isinstance(groups, list) or not groups:
        raise HarmonizerError(f"TF.js manifest {manifest} is not a non-empty list of weight groups", _BAD_MANIFEST)
    out: list[TfjsGroup] = []
    names: set[str] = set()
    for g, group in enumerate(groups, start=1):
        where = f"{manifest} group {g}"
        if not isinstance(group, dict):
            raise HarmonizerError(f"{where} is not an object with paths and weights", _BAD_MANIFEST)
        paths, specs = group.get("paths"), group.get("weights")
        if not isinstance(paths, list) or not paths:
            raise HarmonizerError(f"{where} has no shard paths (a non-empty list)", _BAD_MANIFEST)
        if not isinstance(specs, list):
            raise HarmonizerError(f"{where} has no weights list", _BAD_MANIFEST)
        weights = tuple(_weight(spec, f"{where} weight {i}") for i, spec in enumerate(specs))
        for w in weights:
            if w.name in names:
                raise HarmonizerError(f"{where}: weight {w.name!r} is listed twice", _BAD_MANIFEST)
            names.add(w.name)
        shards = tuple(_shard_path(manifest.parent, entry, where) for entry in paths)
        expected = sum(w.nbytes for w in weights)
        actual = sum(s.stat().st_size for s in shards)
        if actual != expected:
            diff = actual - expected
            what = f"{diff} bytes longer" if diff > 0 else f"{-diff} bytes shorter"
            names_ = ", ".join(p.name for p in shards)
            raise HarmonizerError(
                f"TF.js shard {names_} of {where} is {what} than the manifest says ({actual} bytes, the weights "
                f"take {expected})",
                "the shard is damaged (a text-mode/CRLF copy adds bytes, a cut download loses them); "
                "get it again as binary",
            )
        out.append(TfjsGroup(shards, weights))
    return out


def _decode(weight: TfjsWeight, data: bytes) -> np.ndarray:
    value = np.frombuffer(data, dtype=weight.stored).reshape(weight.shape)
    if weight.scale is not None:
        return value.astype(np.float32) * np.float32(weight.scale) + np.float32(weight.minimum)
    return value.astype(np.float32)


def load_tfjs_manifest(path: str | Path, config: ModelConfig) -> dict[str, np.ndarray]:
    """Read a TF.js `weights_manifest.json` (or its directory) and its binary shards, after validating it."""
    manifest = _manifest_path(Path(path))
    found: dict[str, np.ndarray] = {}
    for group in read_tfjs_manifest(manifest):
        blob = b"".join(s.read_bytes() for s in group.shards)
        if len(blob) != sum(w.nbytes for w in group.weights):
            raise HarmonizerError(f"TF.js shards of {manifest} changed while being read", "run the command again")
        offset = 0
        for w in group.weights:
            found[w.name] = _decode(w, blob[offset : offset + w.nbytes])
            offset += w.nbytes
    return _select(found, config, f"TF.js manifest {manifest}")


def _quantize(value: np.ndarray, dtype: str) -> tuple[bytes, dict]:
    """TF.js affine quantization of a float array (value ≈ q·scale + min), or a float16 cast."""
    if dtype == "float16":
        return value.astype(np.float16).tobytes(), {"dtype": "float16"}
    levels = np.iinfo(_QUANT[dtype]).max
    lo, hi = float(value.min(initial=0.0)), float(value.max(initial=0.0))
    scale = (hi - lo) / levels or 1.0
    q = np.clip(np.round((value - lo) / scale), 0, levels).astype(_QUANT[dtype])
    return q.tobytes(), {"dtype": dtype, "scale": scale, "min": lo}


def write_tfjs_manifest(weights: Mapping[str, np.ndarray], directory: str | Path,
                        shard_bytes: int = 4 << 20, quantize: str | None = None) -> Path:
    """Write Coconet-named float32 arrays as a TF.js manifest plus `group1-shardKofN` files.

    `quantize` = uint8/uint16/float16 stores them the way the Bach Doodle shipped (smaller, lossy)."""
    directory = Path(directory)
    parts, specs = [], []
    for k, v in weights.items():
        value = np.ascontiguousarray(v, dtype=np.float32)
        spec: dict[str, Any] = {"name": SCOPE + k, "shape": list(np.shape(v)), "dtype": "float32"}
        if quantize:
            data, spec["quantization"] = _quantize(value, quantize)
        else:
            data = value.tobytes()
        parts.append(data)
        specs.append(spec)
    blob = b"".join(parts)
    chunks = [blob[i : i + shard_bytes] for i in range(0, len(blob), shard_bytes)] or [b""]
    paths = [f"group1-shard{k + 1}of{len(chunks)}" for k in range(len(chunks))]
    for name, chunk in zip(paths, chunks, strict=True):
        with atomic_file(directory / name) as tmp:
            tmp.write_bytes(chunk)
    write_json(directory / MANIFEST, [{"paths": paths, "weights": specs}])
    return directory / MANIFEST


def load_released(path: str | Path, config: ModelConfig) -> dict[str, np.ndarray]:
    """Either format, told apart by the file: a `.json` manifest (or a directory holding one) → TF.js."""
    p = Path(path)
    if p.suffix == ".json" or (p.is_dir() and (p / MANIFEST).is_file()):
        return load_tfjs_manifest(p, config)
    return load_tf1_checkpoint(p, config)
