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

import itertools
import time
from collections.abc import Callable

import numpy as np

from harmonizer_deploy.music.data import to_pianoroll
from harmonizer_deploy.music.encoding import VOICE_RANGES, VOICES, model_input
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




# ---------------------------------------------------------------------------------------------------------
# Musical quality: what a musician checks first in a four-part harmonization, counted the same way for the
# model's chorales and for Bach's. Pieces are [T, 4] pitch arrays on the 16th grid (SATB, NaN = rest).

BEAT = 4  # 16th steps per quarter-note beat
PAIRS = [(a, b) for a in range(4) for b in range(a + 1, 4)]


def _onset_states(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """The pair's successive (pitch, pitch) sonorities: a new state wherever either voice changes; a rest
    breaks the chain (None)."""
    states: list = []
    for t in range(len(x)):
        state = (float(x[t]), float(y[t]))
        if np.isnan(state[0]) or np.isnan(state[1]):
            if states and states[-1] is not None:
                states.append(None)
            continue
        if not states or states[-1] != state:
            states.append(state)
    return states


def parallel_perfects(piece: np.ndarray) -> tuple[int, int]:
    """(parallel fifths, parallel octaves/unisons) over every voice pair: two successive sonorities of the pair
    a perfect fifth (or octave/unison) apart, compound intervals included, both voices moving the same way."""
    fifths = octaves = 0
    for a, b in PAIRS:
        states = _onset_states(piece[:, a], piece[:, b])
        for prev, cur in itertools.pairwise(states):
            if prev is None or cur is None:
                continue
            da, db = cur[0] - prev[0], cur[1] - prev[1]
            if da == 0 or db == 0 or (da > 0) != (db > 0):
                continue
            i0, i1 = abs(prev[0] - prev[1]) % 12, abs(cur[0] - cur[1]) % 12
            if i0 == i1 == 7:
                fifths += 1
            elif i0 == i1 == 0:
                octaves += 1
    return fifths, octaves


def voice_crossings(piece: np.ndarray) -> int:
    """Times a lower voice goes above its upper neighbour (S/A, A/T, T/B), counted once per crossing."""
    count = 0
    for upper in range(3):
        crossed = piece[:, upper + 1] > piece[:, upper]  # NaN compares False: a rest ends a crossing
        count += int(crossed[0]) + int((crossed[1:] & ~crossed[:-1]).sum())
    return count


def out_of_range(piece: np.ndarray, voices: tuple[int, ...] = (0, 1, 2, 3)) -> tuple[int, int]:
    """(16th steps any of `voices` sounds outside its SATB range (encoding.VOICE_RANGES), steps sounding)."""
    outside = sounding = 0
    for v in voices:
        line = piece[:, v]
        low, high = VOICE_RANGES[VOICES[v]]
        ok = ~np.isnan(line)
        sounding += int(ok.sum())
        outside += int(((line[ok] < low) | (line[ok] > high)).sum())
    return outside, sounding


def repeated_beats(piece: np.ndarray, voices: tuple[int, ...] = (1, 2, 3)) -> tuple[int, int]:
    """(beats where a voice keeps the previous beat's pitch, beats compared), lower voices. The 16th grid
    cannot tell a held note from a repeated one, so this is the share of beats without movement."""
    same = total = 0
    for v in voices:
        beats = piece[::BEAT, v]
        prev, cur = beats[:-1], beats[1:]
        ok = ~np.isnan(prev) & ~np.isnan(cur)
        same += int((prev[ok] == cur[ok]).sum())
        total += int(ok.sum())
    return same, total


def musical_figures(pieces: list[np.ndarray]) -> dict:
    """Parallels, crossings, range and movement over `pieces`, as rates a musician can compare."""
    beats = sum(p.shape[0] for p in pieces) / BEAT
    fifths = octaves = crossings = outside = sounding = same = compared = 0
    for piece in pieces:
        f, o = parallel_perfects(piece)
        fifths, octaves, crossings = fifths + f, octaves + o, crossings + voice_crossings(piece)
        a, b = out_of_range(piece, (1, 2, 3))
        outside, sounding = outside + a, sounding + b
        a, b = repeated_beats(piece)
        same, compared = same + a, compared + b
    per100 = 100.0 / beats if beats else float("nan")
    return {
        "pieces": len(pieces), "beats": beats,
        "parallel_fifths_per_100_beats": fifths * per100,
        "parallel_octaves_per_100_beats": octaves * per100,
        "parallels_per_100_beats": (fifths + octaves) * per100,
        "voice_crossings_per_100_beats": crossings * per100,
        "out_of_range_share": outside / sounding if sounding else float("nan"),
        "repeated_beat_ratio": same / compared if compared else float("nan"),
    }


MUSICAL_DEFINITIONS = {
    "parallel_fifths/octaves": "per voice pair, two successive sonorities (a new one wherever either voice "
                               "moves) both a perfect fifth (octave/unison), compound included, both voices "
                               "moving in the same direction; summed over the 6 pairs, per 100 quarter beats",
    "voice_crossings": "a lower voice above its upper neighbour (S/A, A/T, T/B), counted once per crossing, "
                       "per 100 beats",
    "out_of_range_share": "share of sounding 16th steps of alto, tenor and bass outside encoding.VOICE_RANGES "
                          "(alto 53-74, tenor 48-69, bass 36-64)",
    "repeated_beat_ratio": "share of beat-to-beat steps where alto, tenor or bass keeps its pitch (the 16th "
                           "grid cannot tell a held note from a repeated one)",
}


def harmonize_sopranos(run: RunFn, pieces: list[np.ndarray], steps: int, seed: int = 0,
                       progress: Callable[[int, int], None] | None = None,
                       voice_leading: str = "strict") -> list[np.ndarray]:
    """Each piece's soprano line harmonized by the model (Gibbs, `steps` steps, piece i seeded seed + i,
    `voice_leading` as in sampling.GibbsSettings)."""
    from harmonizer_deploy.music.harmonize import harmonize_notes
    from harmonizer_deploy.music.midi import roll_to_notes
    from harmonizer_deploy.music.sampling import GibbsSettings

    settings = GibbsSettings(steps=steps, voice_leading=voice_leading)
    out = []
    for i, piece in enumerate(pieces):
        notes = roll_to_notes(piece[:, 0])
        result = harmonize_notes(notes, run, seed + i, settings, melody_voice="soprano")
        chorale = result.chorale.copy()
        chorale[: piece.shape[0], 0] = piece[: chorale.shape[0], 0]
        out.append(chorale)
        if progress:
            progress(i + 1, len(pieces))
    return out


def musical_evaluation(run: RunFn, pieces: list[np.ndarray], steps: int, seed: int = 0,
                       progress: Callable[[int, int], None] | None = None, voice_leading: str = "strict",
                       score_masks: int = 4) -> dict:
    """The model's harmonizations of the pieces' soprano lines next to Bach's own chorales, same figures.

    With `score_masks` > 0 it also scores both sets of chorales with the model itself (the orderless NLL of
    `evaluate`, that many masks per piece, same seed): a sampler that writes what the network finds unlikely
    shows up as a higher NLL of its own harmonizations."""
    start = time.perf_counter()
    chorales = harmonize_sopranos(run, pieces, steps, seed, progress, voice_leading)
    harmonized = musical_figures(chorales)
    bach = musical_figures(pieces)
    keys = ("parallels_per_100_beats", "voice_crossings_per_100_beats")
    ratio = {k: harmonized[k] / bach[k] if bach[k] else None for k in keys}
    within = {k: harmonized[k] <= 2.0 * bach[k] for k in keys}
    report = {"harmonized": harmonized, "bach": bach, "gibbs_steps": steps, "seed": seed,
              "voice_leading": voice_leading, "ratio_to_bach": ratio, "within_2x_of_bach": within,
              "definitions": MUSICAL_DEFINITIONS}
    if score_masks > 0:
        report["model_nll_per_note"] = {
            "harmonized": evaluate(run, chorales, score_masks, seed)["nll_per_note"],
            "bach": evaluate(run, pieces, score_masks, seed)["nll_per_note"],
            "masks_per_piece": score_masks,
        }
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def musical_table(reports: dict[str, dict]) -> str:
    """Markdown: one row per model plus Bach's own chorales (taken from the first report)."""
    cols = [("parallel_fifths_per_100_beats", "parallel 5ths /100 beats", "{:.2f}"),
            ("parallel_octaves_per_100_beats", "parallel 8ves /100 beats", "{:.2f}"),
            ("voice_crossings_per_100_beats", "voice crossings /100 beats", "{:.2f}"),
            ("out_of_range_share", "A/T/B out of range", "{:.2%}"),
            ("repeated_beat_ratio", "A/T/B same pitch as previous beat", "{:.1%}")]
    lines = ["| harmonized by | " + " | ".join(c[1] for c in cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    first = next(iter(reports.values()))
    rows = [(f"`{name}` ({r['gibbs_steps']} Gibbs steps, voice leading {r.get('voice_leading', 'off')})",
             r["harmonized"]) for name, r in reports.items()]
    rows.append(("Bach (the same chorales)", first["bach"]))
    for label, figures in rows:
        lines.append(f"| {label} | " + " | ".join(f.format(figures[k]) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"
