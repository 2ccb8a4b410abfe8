"""A portable counter-based random source: uniform(seed, step, time, voice, stream) in [0, 1).

Why not numpy's generator: the page's sampler (web/static/random.js, the JS mirror of this module) must draw
exactly the same numbers so that the same melody, seed and backend give the same chorale in the browser and in
the CLI. A stateful generator would have to be reimplemented bit for bit in JavaScript and consumed in the same
order; a hash of the draw's coordinates needs only 32-bit multiply, xor and shift, which numpy (uint32 arrays,
wrapping) and JavaScript (Math.imul, >>>) compute identically, and no draw depends on how many came before.

The hash: h starts at a fixed constant; each word w of (seed low 32 bits, seed high 32 bits, step, time, voice,
stream) is folded in as h = mix(h ^ w) with mix = Wellons' "lowbias32" 32-bit integer finalizer (a bijection of
uint32 with full avalanche); the result r gives r / 2**32, so every value is a multiple of 2**-32 below 1 and is
exact in float64 on both sides.
"""

from __future__ import annotations

import numpy as np

START = 0x2545F491  # any fixed odd constant: the hash's initial state
M1 = 0x7FEB352D
M2 = 0x846CA68B
STREAM_MASK = 0  # the draw deciding whether a cell is resampled at a step
STREAM_DRAW = 1  # the inverse-CDF draw choosing the cell's pitch


def _mul32(x: np.ndarray, m: int) -> np.ndarray:
    """x * m mod 2**32, as Math.imul(x, m) >>> 0: the exact product in uint64 (below 2**64), low 32 bits kept."""
    return ((x.astype(np.uint64) * np.uint64(m)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32 on a uint32 array."""
    x = np.asarray(x, dtype=np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = _mul32(x, M1)
    x = x ^ (x >> np.uint32(15))
    x = _mul32(x, M2)
    return x ^ (x >> np.uint32(16))


def seed_words(seed: int) -> tuple[int, int]:
    """The seed as two uint32 words (two's complement mod 2**64, so negative seeds are valid too)."""
    seed = int(seed)
    return seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF


def hash32(seed: int, step: int, time: np.ndarray | int, voice: np.ndarray | int, stream: int) -> np.ndarray:
    """The uint32 hash of each (seed, step, time, voice, stream); `time`/`voice` broadcast against each other."""
    lo, hi = seed_words(seed)
    time_w, voice_w = np.broadcast_arrays(np.asarray(time, dtype=np.int64), np.asarray(voice, dtype=np.int64))
    h = np.full(time_w.shape, START, dtype=np.uint32)
    for word in (lo, hi, int(step) & 0xFFFFFFFF):
        h = mix32(h ^ np.uint32(word))
    h = mix32(h ^ (time_w & 0xFFFFFFFF).astype(np.uint32))
    h = mix32(h ^ (voice_w & 0xFFFFFFFF).astype(np.uint32))
    return mix32(h ^ np.uint32(int(stream) & 0xFFFFFFFF))


def uniform(seed: int, step: int, time: np.ndarray | int, voice: np.ndarray | int, stream: int) -> np.ndarray:
    """Uniform float64 in [0, 1) for each (time, voice) at `step` of `stream`: hash32 / 2**32."""
    return hash32(seed, step, time, voice, stream).astype(np.float64) * (1.0 / 4294967296.0)


def uniform_grid(seed: int, step: int, times: int, voices: int, stream: int) -> np.ndarray:
    """[times, voices] uniforms of one step and stream: what the Gibbs sampler draws per step."""
    return uniform(seed, step, np.arange(times)[:, None], np.arange(voices)[None, :], stream)
