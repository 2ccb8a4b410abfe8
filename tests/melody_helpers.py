"""Melodies for the music tests, written as (pitch, 16ths), and a network that knows nothing."""

from __future__ import annotations

import numpy as np

from harmonizer_deploy.music.encoding import NUM_PITCHES
from harmonizer_deploy.music.midi import Note


def notes_of(spec: list[tuple[int, int]], start: int = 0) -> list[Note]:
    """(pitch, length in 16ths) pairs → consecutive Notes from `start`."""
    out, t = [], start
    for pitch, length in spec:
        out.append(Note(pitch, t, t + length))
        t += length
    return out


def uniform_network(x: np.ndarray) -> np.ndarray:
    """Every pitch equally likely for every voice: the sampler's behaviour without a model."""
    return np.full((*x.shape[:3], 4), 1.0 / NUM_PITCHES, dtype=np.float32)
