"""Annealed blocked Gibbs sampling (Coconet / Bach Doodle) over any backend.

Every random number is a counter-based hash of (seed, step, time, voice, stream) (`music.random`, mirrored
bit for bit by the page's random.js), the same whatever the backend or the language, and notes are drawn by
inverse CDF on the probabilities; so two backends (or the CLI and the page) fed the same seed differ only where
their float error moves a probability across a uniform draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harmonizer_deploy.music.data import from_pianoroll
from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, NUM_VOICES, VOICE_RANGES, VOICES, model_input
from harmonizer_deploy.music.random import STREAM_DRAW, STREAM_MASK, uniform_grid
from harmonizer_deploy.music.voice_leading import check_mode, draw_with_voice_leading

RunFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GibbsSettings:
    """Bach Doodle defaults: 96 steps, Yao schedule pmin 0.1, pmax 0.9, alpha 0.7, temperature 0.99; plus
    `voice_leading`: "strict" (default) weighs each drawn note against parallel perfect fifths/octaves and voice
    crossings with the other voices' current notes (music.voice_leading), "off" draws from the network alone."""

    steps: int = 96
    pmin: float = 0.1
    pmax: float = 0.9
    alpha: float = 0.7
    temperature: float = 0.99
    # Time length of each network call; None = the whole piece in one call (fully convolutional model).
    window: int | None = None
    voice_leading: str = "strict"

    def __post_init__(self) -> None:
        check_mode(self.voice_leading)


DEFAULT_GIBBS = GibbsSettings()


def yao_probability(i: int, n: int, s: GibbsSettings) -> float:
    """Fraction of unknown cells resampled at step i (Yao et al.): max(pmin, (pmax − (pmax − pmin)·i/n)/alpha)."""
    return max(s.pmin, (s.pmax - (s.pmax - s.pmin) * i / n) / s.alpha)


def range_mask(shift: int = 0) -> np.ndarray:
    """[46, 4] 1 where a pitch is inside the voice's SATB range: sampling never leaves a voice's range.

    `shift`: the piece is sampled `shift` semitones above where it will sound, so the ranges move with it and
    every voice still lies in its range once transposed back."""
    allowed = np.zeros((NUM_PITCHES, NUM_VOICES), dtype=np.float64)
    for v, voice in enumerate(VOICES):
        low, high = (p + shift for p in VOICE_RANGES[voice])
        low, high = max(low, MIN_PITCH) - MIN_PITCH, min(high, MIN_PITCH + NUM_PITCHES - 1) - MIN_PITCH
        if low <= high:
            allowed[low : high + 1, v] = 1.0
    return allowed


def windowed_probs(run: RunFn, roll: np.ndarray, mask: np.ndarray, window: int | None) -> np.ndarray:
    """Probabilities [T, 46, 4] for the whole piece: one call, or overlapping windows (hop window/2) where each
    step takes the prediction of the window in which it lies most centrally."""
    t = roll.shape[0]
    x = model_input(roll, mask)
    if window is None or window == t:
        return np.asarray(run(x[None]))[0]
    if t < window:
        raise ValueError(f"piece of {t} steps is shorter than the backend's fixed window of {window}")
    hop = max(1, window // 2)
    starts = list(range(0, t - window + 1, hop))
    if starts[-1] != t - window:
        starts.append(t - window)
    out = np.zeros((t, NUM_PITCHES, NUM_VOICES), dtype=np.float32)
    best = np.full(t, -1.0)
    for s in starts:
        probs = np.asarray(run(x[None, s : s + window]))[0]
        centre = s + (window - 1) / 2
        score = window / 2 - np.abs(np.arange(s, s + window) - centre)
        take = score > best[s : s + window]
        out[s : s + window][take] = probs[take]
        best[s : s + window][take] = score[take]
    return out


def gibbs(run: RunFn, roll: np.ndarray, known: np.ndarray, seed: int, settings: GibbsSettings = DEFAULT_GIBBS,
          progress: Callable[[int, int], None] | None = None, allowed: np.ndarray | None = None) -> np.ndarray:
    """Fill the unknown cells of `roll` [T, 46, 4]; `known` [T, 4] is True where a voice's value is given.

    Step i masks each unknown (time, voice) cell with probability yao_probability(i), runs the network once
    on the masked piece, and redraws all masked cells from its output (tempered by `temperature`), limited
    to `allowed` [46, 4] (default: each voice's range) and, with `settings.voice_leading` "strict", weighted
    against parallels and crossings with the other voices' current notes.
    """
    t = roll.shape[0]
    roll = roll.astype(np.float32) * known[:, None, :]
    unknown = ~known
    allowed = range_mask() if allowed is None else allowed
    n = settings.steps
    for i in range(n):
        pm = yao_probability(i, n, settings)
        u_mask = uniform_grid(seed, i, t, NUM_VOICES, STREAM_MASK)
        u_draw = uniform_grid(seed, i, t, NUM_VOICES, STREAM_DRAW)
        cells = (u_mask < pm) & unknown
        if i == 0:
            cells = unknown.copy()  # nothing to condition on yet: the first step fills every unknown cell
        if not cells.any():
            if progress:
                progress(i + 1, n)
            continue
        mask = np.broadcast_to(cells[:, None, :], roll.shape).astype(np.float32)
        probs = windowed_probs(run, roll, mask, settings.window).astype(np.float64)
        p = np.power(np.clip(probs, 0.0, None), 1.0 / settings.temperature) * allowed
        if settings.voice_leading == "strict":
            idx = draw_with_voice_leading(p, from_pianoroll(roll), cells, u_draw)
        else:
            cdf = np.cumsum(p, axis=1)
            total = cdf[:, -1:, :]
            # pitch index = number of CDF entries below u·total (inverse CDF), per (time, voice)
            idx = np.minimum((cdf < u_draw[:, None, :] * total).sum(axis=1), NUM_PITCHES - 1)
        draw = np.zeros_like(roll)
        np.put_along_axis(draw, idx[:, None, :], 1.0, axis=1)
        roll = np.where(mask > 0, draw, roll).astype(np.float32)
        if progress:
            progress(i + 1, n)
    return roll
