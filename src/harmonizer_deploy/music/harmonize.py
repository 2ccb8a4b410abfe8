"""A melody in, a four-part chorale out: the job the model exists for, on any backend.

The melody becomes one known voice (soprano, or the voice whose range fits it: `--melody-voice`), or several
given voices are kept (`--keep-voices`); the other voices are filled by annealed Gibbs sampling
(`sampling.gibbs`) inside their ranges. When a given line has to be transposed into its range for the model,
the infilled voices' ranges move with it, so every voice is in range once the result is transposed back.
`musical_problems` states the checks a harmonization must pass.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.data import from_pianoroll, to_pianoroll
from harmonizer_deploy.music.encoding import (
    DATA_VOICE_RANGES,
    MAX_PITCH,
    MIN_PITCH,
    NUM_VOICES,
    TYPICAL_VOICE_RANGES,
    VOICE_RANGES,
    VOICES,
)
from harmonizer_deploy.music.midi import STEPS_PER_BAR, Note, melody_pitches, roll_to_notes
from harmonizer_deploy.music.sampling import DEFAULT_GIBBS, GibbsSettings, RunFn, gibbs, range_mask

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


VOICE_CHOICES = ("auto", *VOICES)


def voice_fit(line: np.ndarray, voice: str) -> tuple[float, float]:
    """How well a line sits where `voice` lives in the training data: (share of its sounding 16th steps inside
    the voice's typical range, share inside its full range); higher is better."""
    notes = line[~np.isnan(line)]
    if notes.size == 0:
        return 0.0, 0.0
    (lo, hi), (low, high) = TYPICAL_VOICE_RANGES[voice], DATA_VOICE_RANGES[voice]
    return float(((notes >= lo) & (notes <= hi)).mean()), float(((notes >= low) & (notes <= high)).mean())


def choose_melody_voice(line: np.ndarray) -> str:
    """`auto`: the voice whose range in the training data fits the melody best; on a tie the higher voice
    (a tune is usually the top line)."""
    return max(VOICES, key=lambda v: (*voice_fit(line, v), -VOICES.index(v)))


def assign_voices(lines: list[tuple[str, np.ndarray]]) -> list[int]:
    """Voices (indices into VOICES) for given lines: by track name when every name is a distinct voice
    (Soprano/Alto/Tenor/Bass or S/A/T/B), else the pitch-ordered choice of voices that fits the data best."""
    if not 1 <= len(lines) < NUM_VOICES:
        raise HarmonizerError(
            f"--keep-voices needs 1 to {NUM_VOICES - 1} tracks with notes, the file has {len(lines)}",
            "pass a MIDI/MusicXML file with two or three single-line tracks (the voices to keep)",
        )
    by_name = []
    for name, _ in lines:
        key = name.strip().lower()
        match = [i for i, v in enumerate(VOICES) if key in (v, v[0])]
        by_name.append(match[0] if match else None)
    if None not in by_name and len(set(by_name)) == len(by_name):
        return by_name  # type: ignore[return-value]
    means = [float(np.nanmean(line)) for _, line in lines]
    order = sorted(range(len(lines)), key=lambda i: -means[i])  # highest line first
    best, best_score = None, None
    for combo in itertools.combinations(range(NUM_VOICES), len(lines)):
        score = [0.0, 0.0]
        for voice, i in zip(combo, order, strict=True):
            fit = voice_fit(lines[i][1], VOICES[voice])
            score = [score[0] + fit[0], score[1] + fit[1]]
        if best_score is None or tuple(score) > best_score:
            best, best_score = combo, tuple(score)
    out = [0] * len(lines)
    for voice, i in zip(best, order, strict=True):  # type: ignore[arg-type]
        out[i] = voice
    return out


def voice_shift(line: np.ndarray, voice: str = "soprano") -> int:
    """Semitones to add so the line fits `voice`'s range: 0 if it fits, else the nearest octave shift that
    fits, else the smallest shift that does; a line wider than the range cannot be harmonized as that voice."""
    low, high = VOICE_RANGES[voice]
    lo, hi = float(np.nanmin(line)), float(np.nanmax(line))
    if hi - lo > high - low:
        raise HarmonizerError(
            f"the melody spans {int(hi - lo)} semitones (MIDI {int(lo)}-{int(hi)}); the {voice} range is "
            f"{high - low} ({low}-{high})", "pass a melody with a narrower range, or another --melody-voice",
        )
    fits = [s for s in range(-48, 49) if lo + s >= low and hi + s <= high]
    if not fits:  # more than four octaves away from the soprano range (e.g. MIDI pitches below 12)
        raise HarmonizerError(
            f"the melody (MIDI {int(lo)}-{int(hi)}) is more than four octaves from the soprano range {low}-{high}",
            "pass a melody in a singable register",
        )
    octaves = [s for s in fits if s % 12 == 0]
    return min(octaves or fits, key=abs)


def soprano_shift(line: np.ndarray) -> int:
    return voice_shift(line, "soprano")


def common_shift(lines: Mapping[int, np.ndarray]) -> int:
    """One transposition for all given lines: each inside its voice's range if possible (0, else the nearest
    octave, else the smallest), else each inside the model's pitch range (given voices may sit anywhere)."""
    if len(lines) == 1:
        (v, line), = lines.items()
        return voice_shift(line, VOICES[v])
    bounds = {v: (float(np.nanmin(x)), float(np.nanmax(x))) for v, x in lines.items()}
    for ranges in ({v: VOICE_RANGES[VOICES[v]] for v in lines}, {v: (MIN_PITCH, MAX_PITCH) for v in lines}):
        fits = [s for s in range(-48, 49)
                if all(bounds[v][0] + s >= ranges[v][0] and bounds[v][1] + s <= ranges[v][1] for v in lines)]
        if fits:
            octaves = [s for s in fits if s % 12 == 0]
            return min(octaves or fits, key=abs)
    span = max(b[1] for b in bounds.values()) - min(b[0] for b in bounds.values())
    raise HarmonizerError(f"the given voices span {int(span)} semitones, more than the model's range "
                          f"{MIN_PITCH}-{MAX_PITCH}", "pass voices that fit within four octaves")


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def musical_problems(melody: np.ndarray, chorale: np.ndarray, melody_voice: int = 0,
                     given: Mapping[int, np.ndarray] | None = None) -> list[str]:
    """What is wrong with `chorale` [T, 4] as a harmonization of `melody` [T] sung by `melody_voice`, with the
    `given` voices kept: a changed given line, a silent infilled voice, an infilled voice out of its range."""
    problems = []
    if chorale.shape != (melody.shape[0], NUM_VOICES):
        return [f"chorale has shape {chorale.shape}, expected {(melody.shape[0], NUM_VOICES)}"]
    fixed = {melody_voice: melody, **(given or {})}
    for v, line in fixed.items():
        same = _same(chorale[:, v], line)
        if not same.all():
            what = "melody" if v == melody_voice else f"given {VOICES[v]}"
            problems.append(f"{what} changed at {int((~same).sum())} steps")
    for v, voice in enumerate(VOICES):
        if v in fixed:
            continue
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
    melody: np.ndarray  # [T] original pitches of the melody voice
    chorale: np.ndarray  # [T, 4] in the melody's key and register
    shift: int  # semitones the model frame is above the original
    seconds: float
    melody_voice: int = 0  # index into VOICES
    fixed: tuple[int, ...] = (0,)  # every voice that was given (the melody's included)

    @property
    def model_frame(self) -> np.ndarray:
        return self.chorale + self.shift

    def voices(self, given: list[Note] | Mapping[int, list[Note]], bar: int = STEPS_PER_BAR) -> list[list[Note]]:
        """Given voices = the input notes exactly (repeated notes stay separate); the others merged per bar.
        `given`: the melody's notes, or {voice index: notes} for every given voice."""
        lines = {self.melody_voice: list(given)} if isinstance(given, list) else dict(given)
        return [list(lines[v]) if v in lines else roll_to_notes(self.chorale[:, v], bar) for v in range(NUM_VOICES)]


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


def harmonize_voices(given: Mapping[int, list[Note]], run: RunFn, seed: int = 0,
                     settings: GibbsSettings = DEFAULT_GIBBS, progress: Callable[[int, int], None] | None = None,
                     melody_voice: int | None = None) -> Harmonization:
    """Keep the `given` voices ({voice index: notes}) note for note and infill the others with the network `run`
    ([1, T, 46, 8] → [1, T, 46, 4]). Each infilled voice stays inside its range where it will sound."""
    start = time.perf_counter()
    if not given or not all(given.values()):
        raise HarmonizerError("nothing to harmonize: a given voice has no notes", "pass at least one note")
    if len(given) >= NUM_VOICES:
        raise HarmonizerError("all four voices are given: nothing to infill", "pass one to three voices")
    t = max(n.end for notes in given.values() for n in notes)
    lines = {v: melody_pitches(notes, t) for v, notes in given.items()}
    shift = common_shift(lines)
    allowed = range_mask(shift)
    for v, voice in enumerate(VOICES):
        if v not in lines and not allowed[:, v].any():
            raise HarmonizerError(f"transposed by {shift:+d} for the model, the {voice} has no room left in the "
                                  f"model's pitch range", "choose another --melody-voice (or auto)")
    length = max(t, settings.window or 0)
    piece = np.full((length, NUM_VOICES), np.nan, dtype=np.float32)
    known = np.zeros((length, NUM_VOICES), dtype=bool)
    for v, line in lines.items():
        piece[:t, v] = line + shift
        piece[t:, v] = piece[t - 1, v]  # a fixed window longer than the tune: hold the last step, trimmed after
        known[:, v] = True
    roll = gibbs(run, to_pianoroll(piece), known, seed, settings, progress, allowed=allowed)
    chorale = from_pianoroll(roll)[:t]
    for v, line in lines.items():
        chorale[:, v] = line + shift
    melody_voice = min(lines) if melody_voice is None else melody_voice
    return Harmonization(lines[melody_voice], chorale - shift, shift, time.perf_counter() - start, melody_voice,
                         tuple(sorted(lines)))


def harmonize_notes(notes: list[Note], run: RunFn, seed: int = 0, settings: GibbsSettings = DEFAULT_GIBBS,
                    progress: Callable[[int, int], None] | None = None,
                    melody_voice: str = "soprano") -> Harmonization:
    """Harmonize a melody with the network `run`: the melody is sung by `melody_voice` (`auto`: the voice whose
    range fits it best) and the other three voices are infilled."""
    if melody_voice not in VOICE_CHOICES:
        raise HarmonizerError(f"unknown melody voice {melody_voice!r}", f"use one of {', '.join(VOICE_CHOICES)}")
    if not notes:
        raise HarmonizerError("the melody has no notes", "pass a melody")
    voice = choose_melody_voice(melody_pitches(notes)) if melody_voice == "auto" else melody_voice
    index = VOICES.index(voice)
    return harmonize_voices({index: notes}, run, seed, settings, progress, melody_voice=index)
