"""Seeded verification inputs, and their npz save/load so a failing case can be replayed exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.npz import read_npz
from harmonizer_deploy.music.encoding import INPUT_CHANNELS, NUM_PITCHES, realistic_inputs


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
