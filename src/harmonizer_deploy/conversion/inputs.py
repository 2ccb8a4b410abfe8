"""Seeded verification inputs, and their npz save/load so a failing case can be replayed exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.npz import read_npz
from harmonizer_deploy.music.encoding import INPUT_CHANNELS, INPUT_NAME, NUM_PITCHES, realistic_inputs


def make_inputs(seed: int, count: int, batch: int, time_steps: int,
                value_range: tuple[float, float] | None = None) -> list[np.ndarray]:
    """`count` realistic inputs (valid chorale-like pianorolls with Coconet masks), reproducible from `seed`;
    with `value_range` (low, high): seeded uniform values instead, to probe the model off its data range."""
    if value_range is None:
        return [realistic_inputs(seed + i, batch, time_steps) for i in range(count)]
    low, high = value_range
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise HarmonizerError(f"input value range [{low}, {high}] is not a finite interval", "pass LOW,HIGH with "
                              "LOW <= HIGH, e.g. --val-range 0,1")
    return [np.random.default_rng(seed + i).uniform(low, high, (batch, time_steps, NUM_PITCHES, INPUT_CHANNELS))
            .astype(np.float32) for i in range(count)]


def save_inputs(path: str | Path, inputs: list[np.ndarray]) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{f"input_{i:03d}": x for i, x in enumerate(inputs)})


def load_inputs(path: str | Path) -> list[np.ndarray]:
    """Load inputs saved by `save_inputs`; each must be float32-castable `[batch, time, 46, 8]`."""
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"inputs file not found: {path}", "pass a file written by --save-inputs")
    data = read_npz(path, "pass a file written by --save-inputs")
    arrays = [data[k] for k in sorted(data)]
    if not arrays:
        raise HarmonizerError(f"{path} holds no inputs", "pass a file written by --save-inputs")
    for i, x in enumerate(arrays):
        if x.ndim != 4 or x.shape[2:] != (NUM_PITCHES, INPUT_CHANNELS) or x.shape[0] < 1 or x.shape[1] < 1:
            raise HarmonizerError(
                f"input {i} in {path} has shape {list(x.shape)}, expected [batch, time, {NUM_PITCHES}, "
                f"{INPUT_CHANNELS}]",
                "save inputs with --save-inputs, or build them with harmonizer_deploy.music.encoding.model_input",
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise HarmonizerError(f"input {i} in {path} has dtype {x.dtype}, expected float32", "cast to float32")
    return [x.astype(np.float32) for x in arrays]


# ---------------------------------------------------------------------------------------------------------
# Inputs for any signature: `[{"name", "dtype", "shape"}]` as model.json and the manifest record it, where a
# dim is a size (fixed) or a name / None (dynamic).

FLOAT_RANGE = (-1.0, 1.0)  # seeded floats: the range a normalised activation or feature lives in
INT_RANGE = (0, 9)  # seeded ints without an embedding table to size them (inclusive); --val-range overrides
PASS_THROUGH = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}  # index → index (input 0)
# elementwise index arithmetic between an int input and a Gather, e.g. Keras' take(): where(i < 0, i + n, i)
INDEX_ARITHMETIC = {"Add", "Sub", "Mul", "Where", "Less", "Greater", "Not", "Equal", "Mod", "Min", "Max", "Clip",
                    "Abs", "Neg"}
SAMPLE_SEP = "#"  # npz key NAME#k: input NAME of sample k (several samples in one file)


def is_harmonizer_io(inputs: list[dict]) -> bool:
    """One input named and shaped like the harmonizer's `pianoroll_mask[batch, time, 46, 8]`."""
    return (len(inputs) == 1 and inputs[0]["name"] == INPUT_NAME and len(inputs[0]["shape"]) == 4
            and list(inputs[0]["shape"][2:]) == [NUM_PITCHES, INPUT_CHANNELS])


def index_ranges(onnx_model: Any) -> dict[str, tuple[int, int]]:
    """Integer inputs used as indices into a constant table (an embedding's Gather): {input: (0, rows - 1)}, so
    generated indices stay inside the table (onnxruntime and TVM disagree on out-of-range gathers)."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    tables = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tables[node.output[0]] = tuple(numpy_helper.to_array(node.attribute[0].t).shape)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ranges: dict[str, tuple[int, int]] = {}
    for value in graph.input:
        if value.name in tables:
            continue
        seen, frontier, rows = set(), [value.name], []
        while frontier:
            tensor = frontier.pop()
            for node in consumers.get(tensor, []):
                follows = (node.op_type in PASS_THROUGH and node.input[0] == tensor) or \
                    node.op_type in INDEX_ARITHMETIC
                if follows and node.output[0] not in seen:
                    seen.add(node.output[0])
                    frontier.append(node.output[0])
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor \
                        and node.input[0] in tables:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    shape = tables[node.input[0]]
                    rows.append(int(shape[axis]))
        if rows:
            ranges[value.name] = (0, min(rows) - 1)
    return ranges


def parse_value_ranges(values: list[str] | str | None) -> dict[str, tuple[float, float]]:
    """`--val-range` values: `LO,HI` (every input) or `NAME=LO,HI` (one input) → {name or "*": (lo, hi)}."""
    if values is None:
        return {}
    ranges: dict[str, tuple[float, float]] = {}
    for value in [values] if isinstance(values, str) else values:
        name, sep, span = value.rpartition("=")
        parts = span.split(",")
        try:
            low, high = (float(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            low = high = None
        if low is None or high is None or not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise HarmonizerError(f"--val-range {value!r} is not LO,HI or NAME=LO,HI with finite LO <= HIGH",
                                  "pass e.g. --val-range 0,1 or --val-range tokens=0,99")
        ranges[name if sep else "*"] = (low, high)
    return ranges


def concrete_shape(sig: dict, batch: int, time_steps: int, sizes: dict[str, int] | None = None) -> tuple[int, ...]:
    """Sizes for a declared shape: fixed dims as declared, a named dim from `sizes`, else axis 0 → batch and
    any other dynamic axis → time_steps."""
    out = []
    for axis, dim in enumerate(sig["shape"]):
        if isinstance(dim, int) and dim > 0:
            out.append(dim)
        elif sizes and isinstance(dim, str) and dim in sizes:
            out.append(int(sizes[dim]))
        else:
            out.append(batch if axis == 0 else time_steps)
    return tuple(out)


def make_feeds(inputs: list[dict], seed: int, count: int, batch: int, time_steps: int,
               value_ranges: dict[str, tuple[float, float]] | None = None,
               int_ranges: dict[str, tuple[int, int]] | None = None,
               sizes: dict[str, int] | None = None) -> list[dict[str, np.ndarray]]:
    """`count` seeded input sets {name: array} for any signature. The harmonizer's gets chorale-like pianorolls
    (uniform values with a `*` range); otherwise floats uniform in `FLOAT_RANGE`, ints in the table's range
    (`int_ranges`, e.g. from `index_ranges`) or `INT_RANGE`, bools half true; `value_ranges` overrides per name."""
    value_ranges = value_ranges or {}
    unknown = sorted(set(value_ranges) - {"*"} - {sig["name"] for sig in inputs})
    if unknown:
        raise HarmonizerError(f"--val-range names {', '.join(unknown)}, not an input of this model",
                              f"inputs: {', '.join(sig['name'] for sig in inputs)}")
    if is_harmonizer_io(inputs) and inputs[0]["name"] not in value_ranges:
        shape = concrete_shape(inputs[0], batch, time_steps, sizes)
        arrays = make_inputs(seed, count, shape[0], shape[1], value_ranges.get("*"))
        return [{INPUT_NAME: x} for x in arrays]
    feeds = []
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        feed = {}
        for sig in inputs:
            shape = concrete_shape(sig, batch, time_steps, sizes)
            dtype = np.dtype(sig.get("dtype", "float32"))
            given = value_ranges.get(sig["name"], value_ranges.get("*"))
            if dtype == np.bool_:
                feed[sig["name"]] = rng.random(shape) < 0.5
            elif np.issubdtype(dtype, np.integer):
                low, high = given or (int_ranges or {}).get(sig["name"], INT_RANGE)
                feed[sig["name"]] = rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1, shape).astype(dtype)
            else:
                low, high = given or FLOAT_RANGE
                feed[sig["name"]] = rng.uniform(low, high, shape).astype(dtype)
        feeds.append(feed)
    return feeds


def save_feeds(path: str | Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """npz keyed by input name (`NAME#k` for sample k when there are several); a one-input model keeps the old
    `input_000…` layout, which every earlier file uses."""
    if all(len(f) == 1 for f in feeds):
        save_inputs(path, [next(iter(f.values())) for f in feeds])
        return
    arrays = {k: v for i, f in enumerate(feeds) for k, v in
              (f.items() if len(feeds) == 1 else ((f"{n}{SAMPLE_SEP}{i:03d}", a) for n, a in f.items()))}
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def load_feeds(path: str | Path, inputs: list[dict]) -> list[dict[str, np.ndarray]]:
    """Input sets from an npz: keys = input names (one set), `NAME#k` (set k), or the old `input_000…` (one array
    per set, for a one-input model). Each array must match its input's rank, fixed dims and kind of dtype."""
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"inputs file not found: {path}", "pass a file written by --save-inputs")
    arrays = read_npz(path, "pass a file written by --save-inputs")  # hostile input: never unpickled, sizes checked
    if is_harmonizer_io(inputs) and INPUT_NAME not in arrays and not any(SAMPLE_SEP in k for k in arrays):
        return [{INPUT_NAME: x} for x in load_inputs(path)]
    names = [sig["name"] for sig in inputs]
    if set(arrays) == set(names):
        sets = [arrays]
    elif all(SAMPLE_SEP in k for k in arrays):
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key, array in arrays.items():
            name, _, index = key.rpartition(SAMPLE_SEP)
            grouped.setdefault(index, {})[name] = array
        sets = [grouped[k] for k in sorted(grouped)]
    elif len(names) == 1 and arrays and all(k.startswith("input_") for k in arrays):
        sets = [{names[0]: arrays[k]} for k in sorted(arrays)]
    else:
        raise HarmonizerError(f"{path} holds arrays {sorted(arrays)[:6]}, not this model's inputs {names}",
                              "key the arrays by input name (NAME, or NAME#k for several), as --save-inputs does")
    return [_checked_feed(path, k, feed, inputs) for k, feed in enumerate(sets)]


def _checked_feed(path: Path, k: int, feed: dict[str, np.ndarray], inputs: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for sig in inputs:
        name = sig["name"]
        if name not in feed:
            raise HarmonizerError(f"{path} set {k} has no array for input {name}", "save every input")
        x, dtype = feed[name], np.dtype(sig.get("dtype", "float32"))
        fixed_ok = all(not (isinstance(d, int) and d > 0) or d == n for d, n in zip(sig["shape"], x.shape,
                                                                                   strict=False))
        if x.ndim != len(sig["shape"]) or not fixed_ok or min(x.shape, default=1) < 1:
            raise HarmonizerError(f"input {name} in {path} has shape {list(x.shape)}, the model takes {sig['shape']}",
                                  "save inputs with --save-inputs, or match the model's declared shape")
        kinds = {"b": "b", "i": "iu", "u": "iu", "f": "fiub"}[dtype.kind]
        if x.dtype.kind not in kinds:
            raise HarmonizerError(f"input {name} in {path} has dtype {x.dtype}, the model takes {dtype}",
                                  f"cast it to {dtype}")
        out[name] = x.astype(dtype)
    return out
