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
from collections.abc import Mapping
from pathlib import Path

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

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def _manifest_path(path: Path) -> Path:
    return path / MANIFEST if path.is_dir() else path


def load_tfjs_manifest(path: str | Path, config: ModelConfig) -> dict[str, np.ndarray]:
    """Read a TF.js `weights_manifest.json` (or its directory) and its binary shards."""
    manifest = _manifest_path(Path(path))
    if not manifest.is_file():
        raise HarmonizerError(f"TF.js manifest not found: {manifest}", f"pass {MANIFEST} or its directory")
    try:
        groups = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarmonizerError(f"TF.js manifest {manifest} is not valid JSON ({exc})", "re-download it") from exc
    if not isinstance(groups, list):
        raise HarmonizerError(f"TF.js manifest {manifest} is not a list of weight groups", "pass a TF.js manifest")
    found: dict[str, np.ndarray] = {}
    for group in groups:
        blob = bytearray()
        for shard in group.get("paths", []):
            shard_path = manifest.parent / shard
            if not shard_path.is_file():
                raise HarmonizerError(f"TF.js shard {shard_path} (listed in {manifest}) is missing",
                                      "download every shard next to the manifest")
            blob += shard_path.read_bytes()
        offset = 0
        for spec in group.get("weights", []):
            name, shape = spec["name"], tuple(spec["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            quant = spec.get("quantization")
            dtype = _QUANT[quant["dtype"]] if quant else _DTYPES.get(spec.get("dtype", "float32"))
            if dtype is None:
                raise HarmonizerError(f"TF.js weight {name!r} has unsupported dtype {spec.get('dtype')}",
                                      "convert the model with float32 weights")
            nbytes = count * np.dtype(dtype).itemsize
            if offset + nbytes > len(blob):
                raise HarmonizerError(f"TF.js shards of {manifest} end inside weight {name!r}",
                                      "the shards are truncated; download them again")
            value = np.frombuffer(bytes(blob[offset : offset + nbytes]), dtype=dtype).reshape(shape)
            offset += nbytes
            if quant and quant["dtype"] != "float16":
                value = value.astype(np.float32) * quant["scale"] + quant["min"]
            found[name] = value.astype(np.float32)
    return _select(found, config, f"TF.js manifest {manifest}")


def write_tfjs_manifest(weights: Mapping[str, np.ndarray], directory: str | Path,
                        shard_bytes: int = 4 << 20) -> Path:
    """Write Coconet-named float32 arrays as a TF.js manifest plus `group1-shardKofN` files."""
    directory = Path(directory)
    blob = b"".join(np.ascontiguousarray(v, dtype=np.float32).tobytes() for v in weights.values())
    chunks = [blob[i : i + shard_bytes] for i in range(0, len(blob), shard_bytes)] or [b""]
    paths = [f"group1-shard{k + 1}of{len(chunks)}" for k in range(len(chunks))]
    for name, chunk in zip(paths, chunks, strict=True):
        with atomic_file(directory / name) as tmp:
            tmp.write_bytes(chunk)
    specs = [{"name": SCOPE + k, "shape": list(np.shape(v)), "dtype": "float32"} for k, v in weights.items()]
    write_json(directory / MANIFEST, [{"paths": paths, "weights": specs}])
    return directory / MANIFEST


def load_released(path: str | Path, config: ModelConfig) -> dict[str, np.ndarray]:
    """Either format, told apart by the file: a `.json` manifest (or a directory holding one) → TF.js."""
    p = Path(path)
    if p.suffix == ".json" or (p.is_dir() and (p / MANIFEST).is_file()):
        return load_tfjs_manifest(p, config)
    return load_tf1_checkpoint(p, config)
