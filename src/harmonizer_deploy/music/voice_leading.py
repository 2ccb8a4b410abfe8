"""Voice leading in the sampler: keep a redrawn note out of parallel perfect fifths/octaves and voice crossings.

Blocked Gibbs redraws many cells of different voices at once, each from the network's own conditional, and
nothing in the network forbids two voices from moving together into a perfect interval: the Bach Doodle model
writes ~38x Bach's rate of parallel fifths and octaves that way. With `strict` voice leading, every candidate
pitch of a redrawn cell (t, v) is weighted against the CURRENT notes of the other voices (at t, and the
sonorities at t-1 and t+1): times PARALLEL_FACTOR for each parallel perfect fifth/octave it would form with
another voice, times CROSSING_FACTOR for crossing an adjacent voice. The factors are tiny, not zero: a cell
where every candidate breaks a rule keeps the network's preferences among the least bad ones, and no weight
ever becomes 0 where the network's is not.

The cells of one Gibbs step are drawn in 8 passes, (time parity, voice): no two cells of one pass are
neighbours (same time, or adjacent times), so each cell is drawn against the notes just drawn before it, as
in one-cell-at-a-time Gibbs, without any extra network call. The uniforms are the caller's, one per cell,
drawn exactly as without voice leading.

This module is mirrored line for line by web/static/voice_leading.js (the page's sampler): plain loops
over voice pairs and float64 arithmetic, so the two give the same pitches for the same inputs.
"""

from __future__ import annotations

import numpy as np

from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, NUM_VOICES

VOICE_LEADING_MODES = ("strict", "off")
PARALLEL_FACTOR = 1e-6
CROSSING_FACTOR = 1e-6
PERFECT = (0, 7)  # interval classes (semitones mod 12) of the perfect octave/unison and fifth


def check_mode(mode: str) -> str:
    """The mode if it is one of VOICE_LEADING_MODES, else ValueError (callers turn it into a user error)."""
    if mode not in VOICE_LEADING_MODES:
        raise ValueError(f"unknown voice-leading mode {mode!r}: use one of {', '.join(VOICE_LEADING_MODES)}")
    return mode


def _shifted(line: np.ndarray, d: int) -> np.ndarray:
    """line[t + d] for every t (NaN past either end)."""
    out = np.full_like(line, np.nan)
    if d < 0:
        out[-d:] = line[:d]
    else:
        out[:-d] = line[d:]
    return out


def voice_weights(pitches: np.ndarray, v: int) -> np.ndarray:
    """[T, 46] multiplicative weight of each candidate pitch for voice `v` at every time step, given the current
    `pitches` [T, 4] (MIDI, NaN = rest or not drawn yet) of all voices: 1 where the candidate breaks no rule.

    Per other voice o with a note q at t: a crossing (above the voice above, below the voice below) costs
    CROSSING_FACTOR; for each neighbour sonority (t-1 and t+1) where both voices sound, a move of both voices in
    the same direction between two perfect intervals of the same class (fifth to fifth, octave/unison to
    octave/unison, compound included) costs PARALLEL_FACTOR: the rule evaluate.parallel_perfects counts."""
    pitches = np.asarray(pitches, dtype=np.float64)
    cand = (MIN_PITCH + np.arange(NUM_PITCHES, dtype=np.float64))[None, :]  # [1, 46]
    weights = np.ones((pitches.shape[0], NUM_PITCHES), dtype=np.float64)
    line = pitches[:, v]
    for o in range(NUM_VOICES):
        if o == v:
            continue
        q = pitches[:, o][:, None]  # [T, 1]; NaN compares False everywhere below: a rest constrains nothing
        if o == v - 1:
            weights = np.where(cand > q, weights * CROSSING_FACTOR, weights)
        elif o == v + 1:
            weights = np.where(cand < q, weights * CROSSING_FACTOR, weights)
        now = np.abs(cand - q) % 12  # [T, 46]
        perfect = (now == PERFECT[0]) | (now == PERFECT[1])
        for d in (-1, 1):
            a = _shifted(line, d)[:, None]  # this voice at the neighbour sonority
            b = _shifted(pitches[:, o], d)[:, None]  # the other voice there
            similar = (cand - a) * (q - b) > 0  # both move, the same way (from or to the neighbour alike)
            parallel = perfect & similar & (np.abs(a - b) % 12 == now)
            weights = np.where(parallel, weights * PARALLEL_FACTOR, weights)
    return weights


def inverse_cdf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row of unnormalised weights p [N, 46] by uniforms u [N]: the number of CDF
    entries below u·total (the sampler's rule), at most 45."""
    cdf = np.cumsum(p, axis=1)
    return np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), NUM_PITCHES - 1)


def draw_with_voice_leading(p: np.ndarray, pitches: np.ndarray, cells: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Pitch indices [T, 4] (0..45) for the `cells` [T, 4] being redrawn, from the tempered, range-limited
    network weights p [T, 46, 4] times voice_weights, in 8 passes (time parity, then voice) each seeing the
    notes drawn before it; `pitches` [T, 4] holds the current notes (MIDI, NaN = none), `u` [T, 4] the
    uniforms. Cells not redrawn get index 0 (the caller keeps their notes)."""
    t_len = pitches.shape[0]
    current = np.array(pitches, dtype=np.float64)
    idx = np.zeros((t_len, NUM_VOICES), dtype=np.int64)
    parity = np.arange(t_len) % 2
    for r in (0, 1):
        for v in range(NUM_VOICES):
            sel = cells[:, v] & (parity == r)
            if not sel.any():
                continue
            weighted = np.asarray(p[sel, :, v], dtype=np.float64) * voice_weights(current, v)[sel]
            drawn = inverse_cdf(weighted, np.asarray(u[sel, v], dtype=np.float64))
            idx[sel, v] = drawn
            current[sel, v] = MIN_PITCH + drawn
    return idx
