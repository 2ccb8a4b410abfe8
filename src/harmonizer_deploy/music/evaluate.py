"""Note-wise negative log-likelihood on held-out chorales: the orderless-NADE figure Coconet reports.

The orderless NADE log-likelihood of a piece averages the chain rule over orderings o of its D = T·4 cells:
E_o[−Σ_d log p(x_{o_d} | x_{o_<d})]. Term d only depends on the random set C of the d−1 cells before it, and
every cell outside C is equally likely to come next, so

    E_o[NLL(x)] / D = E_{d ~ U{1..D}} E_{C, |C| = d−1} [ mean_{j ∉ C} −log p(x_j | x_C) ].

We estimate the right-hand side with `masks` random (d, C) draws per piece, each one network call that
scores every masked note at once: unbiased for the per-note NLL averaged over orderings, at a cost of
`masks` calls per piece instead of D calls per ordering. Cells where a voice rests carry no note and are
left out of numerator and denominator. Per-piece estimates are weighted by the piece's number of notes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from harmonizer_deploy.music.data import to_pianoroll
from harmonizer_deploy.music.encoding import model_input
from harmonizer_deploy.music.train import orderless_mask

RunFn = Callable[[np.ndarray], np.ndarray]

# Huang et al., "Counterpoint by Convolution", ISMIR 2017 (arXiv:1903.07227): Coconet's note-wise NLL on the
# JSB chorales test set (16th-note resolution) for its best models, as quoted in this project's issue 3. The
# table text itself could not be retrieved here to pin the exact cell, hence a range and `verified: false`.
PUBLISHED = {
    "source": "Huang, Cooijmans, Roberts, Courville, Eck: Counterpoint by Convolution, ISMIR 2017 "
              "(arXiv:1903.07227), JSB chorales test set, 16th-note resolution, note-wise NLL",
    "coconet_nll_per_note": [0.54, 0.57],
    "verified": False,
}


def piece_nll(run: RunFn, roll: np.ndarray, rng: np.random.Generator, masks: int, batch: int) -> tuple[float, int]:
    """(mean over `masks` random masks of the mean masked-note NLL, number of notes) for one piece [T,46,4]."""
    t = roll.shape[0]
    has_note = roll.sum(axis=1) > 0  # [T, V]
    estimates = []
    for first in range(0, masks, batch):
        cells = [orderless_mask(rng, t) for _ in range(min(batch, masks - first))]
        x = np.stack([model_input(roll, np.broadcast_to(c[:, None, :], roll.shape)) for c in cells])
        probs = np.asarray(run(x), dtype=np.float64)
        for c, p in zip(cells, probs, strict=True):
            scored = (c > 0) & has_note
            if not scored.any():
                continue
            p_true = (p * roll).sum(axis=1)  # [T, V] probability of the actual pitch
            estimates.append(float(-np.log(np.clip(p_true[scored], 1e-12, None)).mean()))
    return (float(np.mean(estimates)) if estimates else float("nan")), int(has_note.sum())


def evaluate(run: RunFn, pieces: list[np.ndarray], masks: int = 16, seed: int = 0, batch: int = 8,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Note-wise NLL over `pieces` ([T,4] pitch arrays) with its standard error across pieces."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    values, weights = [], []
    for i, piece in enumerate(pieces):
        nll, notes = piece_nll(run, to_pianoroll(piece), rng, masks, batch)
        if np.isfinite(nll):
            values.append(nll)
            weights.append(notes)
        if progress:
            progress(i + 1, len(pieces))
    v, w = np.asarray(values), np.asarray(weights, dtype=np.float64)
    mean = float((v * w).sum() / w.sum())
    # standard error of a weighted mean across pieces (pieces are the independent units)
    stderr = float(np.sqrt(((w / w.sum()) ** 2 * (v - mean) ** 2).sum() * len(v) / max(1, len(v) - 1)))
    return {
        "nll_per_note": mean,
        "stderr": stderr,
        "pieces": len(values),
        "notes": int(w.sum()),
        "masks_per_piece": masks,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "estimator": "orderless NADE, Monte-Carlo over orderings: per piece `masks_per_piece` random masks "
                     "(d ~ U{1..T*4}, d random cells) each scoring every masked note; mean NLL per note, "
                     "pieces weighted by notes",
        "published": PUBLISHED,
    }


