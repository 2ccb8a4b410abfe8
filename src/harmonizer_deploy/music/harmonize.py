"""A melody in, a four-part chorale out: the job the model exists for, on any backend.

The melody becomes the known soprano (transposed into the soprano range when it leaves it), the other three
voices are filled by annealed Gibbs sampling (`sampling.gibbs`), and the result is transposed back and
written as four MIDI tracks. `musical_problems` states the checks a harmonization must pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.data import from_pianoroll, to_pianoroll
from harmonizer_deploy.music.encoding import NUM_VOICES, VOICE_RANGES, VOICES
from harmonizer_deploy.music.midi import (
    Note,
    melody_pitches,
    roll_to_notes,
)
from harmonizer_deploy.music.sampling import DEFAULT_GIBBS, GibbsSettings, RunFn, gibbs

SAMPLES_DIR = Path(__file__).parent / "samples"
SAMPLE_MELODY = SAMPLES_DIR / "ode-to-joy.mid"

# "Ode to Joy" (Beethoven, 1824; public domain), first eight bars in D major as (MIDI pitch, 16th steps).
ODE_TO_JOY = [
    (66, 4), (66, 4), (67, 4), (69, 4), (69, 4), (67, 4), (66, 4), (64, 4),
    (62, 4), (62, 4), (64, 4), (66, 4), (66, 6), (64, 2), (64, 8),
    (66, 4), (66, 4), (67, 4), (69, 4), (69, 4), (67, 4), (66, 4), (64, 4),
    (62, 4), (62, 4), (64, 4), (66, 4), (64, 6), (62, 2), (62, 8),
]


def sample_melody_notes() -> list[Note]:
    notes, t = [], 0
    for pitch, length in ODE_TO_JOY:
        notes.append(Note(pitch, t, t + length))
        t += length
    return notes


def soprano_shift(line: np.ndarray) -> int:
    """Semitones to add so the melody fits the soprano range: 0 if it fits, else the nearest octave shift that
    fits, else the smallest shift that does; a melody wider than the range cannot be harmonized."""
    low, high = VOICE_RANGES["soprano"]
    lo, hi = float(np.nanmin(line)), float(np.nanmax(line))
    if hi - lo > high - low:
        raise HarmonizerError(
            f"the melody spans {int(hi - lo)} semitones (MIDI {int(lo)}-{int(hi)}); the soprano range is "
            f"{high - low} ({low}-{high})", "pass a melody with a narrower range",
        )
    fits = [s for s in range(-48, 49) if lo + s >= low and hi + s <= high]
    if not fits:  # more than four octaves away from the soprano range (e.g. MIDI pitches below 12)
        raise HarmonizerError(
            f"the melody (MIDI {int(lo)}-{int(hi)}) is more than four octaves from the soprano range {low}-{high}",
            "pass a melody in a singable register",
        )
    octaves = [s for s in fits if s % 12 == 0]
    return min(octaves or fits, key=abs)


def musical_problems(melody: np.ndarray, chorale: np.ndarray) -> list[str]:
    """What is wrong with `chorale` [T, 4] (model-frame pitches) as a harmonization of `melody` [T]."""
    problems = []
    if chorale.shape != (melody.shape[0], NUM_VOICES):
        return [f"chorale has shape {chorale.shape}, expected {(melody.shape[0], NUM_VOICES)}"]
    same = (chorale[:, 0] == melody) | (np.isnan(chorale[:, 0]) & np.isnan(melody))
    if not same.all():
        problems.append(f"melody changed at {int((~same).sum())} steps")
    for v, voice in enumerate(VOICES[1:], start=1):
        line = chorale[:, v]
        if np.isnan(line).any():
            problems.append(f"{voice} is silent at {int(np.isnan(line).sum())} steps")
        low, high = VOICE_RANGES[voice]
        outside = (line < low) | (line > high)
        if outside.any():
            problems.append(f"{voice} leaves its range {low}-{high} at {int(outside.sum())} steps")
    return problems


@dataclass
class Harmonization:
    melody: np.ndarray  # [T] original pitches
    chorale: np.ndarray  # [T, 4] in the melody's key and register
    shift: int  # semitones the model frame is above the original
    seconds: float

    @property
    def model_frame(self) -> np.ndarray:
        return self.chorale + self.shift

    def voices(self, original_melody: list[Note]) -> list[list[Note]]:
        """Soprano = the input notes exactly (repeated notes stay separate); other voices merged per bar."""
        return [list(original_melody)] + [roll_to_notes(self.chorale[:, v]) for v in range(1, NUM_VOICES)]


def backend_window(backend: object) -> int | None:
    """The fixed time length of a static-shape artifact, or None when the backend takes any length."""
    model = getattr(backend, "model", None)
    static = getattr(model, "manifest", {}).get("static_shape") if model is not None else None
    if not static:
        return None
    if static[0] != 1:
        raise HarmonizerError(
            f"backend {getattr(backend, 'name', '?')} was compiled for batch {static[0]}; the sampler runs batch 1",
            "compile without --batch, or with --batch 1",
        )
    return int(static[1])


def harmonize_notes(notes: list[Note], run: RunFn, seed: int = 0, settings: GibbsSettings = DEFAULT_GIBBS,
                    progress: Callable[[int, int], None] | None = None) -> Harmonization:
    """Harmonize a melody with the network `run` ([1, T, 46, 8] → [1, T, 46, 4])."""
    start = time.perf_counter()
    melody = melody_pitches(notes)
    shift = soprano_shift(melody)
    t = melody.shape[0]
    length = max(t, settings.window or 0)
    piece = np.full((length, NUM_VOICES), np.nan, dtype=np.float32)
    piece[:t, 0] = melody + shift
    piece[t:, 0] = piece[t - 1, 0]  # a fixed window longer than the tune: hold the last note, trimmed after
    known = np.zeros((length, NUM_VOICES), dtype=bool)
    known[:, 0] = True
    roll = gibbs(run, to_pianoroll(piece), known, seed, settings, progress)
    chorale = from_pianoroll(roll)[:t]
    chorale[:, 0] = melody + shift
    return Harmonization(melody, chorale - shift, shift, time.perf_counter() - start)


