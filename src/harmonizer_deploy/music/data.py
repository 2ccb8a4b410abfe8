"""Chorale datasets as lists of [time, 4] MIDI-pitch arrays (SATB, 16th-note steps, NaN = rest).

Two sources: the JSB `Jsb16thSeparated.npz` Coconet was trained on (train/valid/test splits), and Bach's
chorales shipped offline with the `music21` package, so users can train without downloading anything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file
from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, NUM_VOICES, STEPS_PER_QUARTER

SPLITS = ("train", "valid", "test")
MUSIC21 = "music21"


def load_npz(path: str | Path, split: str) -> list[np.ndarray]:
    """Pieces of one split of a JSB-style npz (object arrays of [time, 4] pitch arrays)."""
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"dataset not found: {path}", "pass the path to Jsb16thSeparated.npz or 'music21'")
    try:
        with np.load(path, allow_pickle=True, encoding="latin1") as data:
            if split not in data.files:
                raise HarmonizerError(
                    f"dataset {path} has no split {split!r} (it has {', '.join(data.files)})",
                    f"use --split with one of {', '.join(data.files)}",
                )
            raw = list(data[split])
    except (OSError, ValueError) as exc:
        raise HarmonizerError(f"cannot read dataset {path}: {reason(exc)}",
                              "pass a JSB-style .npz of chorales") from exc
    pieces = [np.asarray(p, dtype=np.float32) for p in raw]
    for i, piece in enumerate(pieces):
        if piece.ndim != 2 or piece.shape[1] != NUM_VOICES:
            raise HarmonizerError(
                f"dataset {path} split {split}: piece {i} has shape {list(piece.shape)}, expected [time, 4]",
                "pass a JSB-style .npz (SATB pitch arrays)",
            )
    return pieces


def to_pianoroll(piece: np.ndarray) -> np.ndarray:
    """[time, 4] MIDI pitches (NaN = rest) → one-hot [time, 46, 4]; a rest is an all-zero pitch column."""
    t = piece.shape[0]
    roll = np.zeros((t, NUM_PITCHES, NUM_VOICES), dtype=np.float32)
    for v in range(NUM_VOICES):
        pitches = piece[:, v]
        ok = ~np.isnan(pitches)
        idx = pitches[ok].astype(np.int64) - MIN_PITCH
        if np.any((idx < 0) | (idx >= NUM_PITCHES)):
            bad = int(pitches[ok][(idx < 0) | (idx >= NUM_PITCHES)][0])
            raise HarmonizerError(f"pitch {bad} outside the model's range 36-81", "transpose the piece")
        roll[np.nonzero(ok)[0], idx, v] = 1.0
    return roll


def from_pianoroll(roll: np.ndarray) -> np.ndarray:
    """One-hot [time, 46, 4] → [time, 4] MIDI pitches (NaN where a voice column is empty)."""
    pitches = roll.argmax(axis=1).astype(np.float32) + MIN_PITCH
    pitches[roll.sum(axis=1) == 0] = np.nan
    return pitches


# ---------------------------------------------------------------------------------------------------------
# music21's bundled Bach chorales


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harmonizer-deploy"


def score_to_piece(score) -> np.ndarray | None:
    """A music21 four-part score → [time, 4] pitches at 16th-note steps; None if it is not SATB-like."""
    parts = list(score.parts)
    if len(parts) > NUM_VOICES:  # e.g. an added continuo or instrument part: keep the named SATB parts
        named = {str(p.partName or "").strip().lower()[:1]: p for p in parts}
        parts = [named[k] for k in "satb" if k in named]
    if len(parts) != NUM_VOICES:
        return None
    length = round(float(score.highestTime) * STEPS_PER_QUARTER)
    if length <= 0:
        return None
    piece = np.full((length, NUM_VOICES), np.nan, dtype=np.float32)
    for v, part in enumerate(parts):
        for note in part.flatten().notes:
            if note.isChord:
                return None
            start = round(float(note.offset) * STEPS_PER_QUARTER)
            end = round(float(note.offset + note.quarterLength) * STEPS_PER_QUARTER)
            piece[start:end, v] = note.pitch.midi
    ok = piece[~np.isnan(piece)]
    if ok.size == 0 or ok.min() < MIN_PITCH or ok.max() >= MIN_PITCH + NUM_PITCHES:
        return None
    return piece


def load_music21_chorales(progress=None) -> list[np.ndarray]:
    """Bach's four-part chorales from music21's offline corpus, parsed once and cached as npz."""
    try:
        import music21
        from music21 import corpus
    except ImportError as exc:
        raise HarmonizerError("music21 is not installed", "pip install music21==10.5.1") from exc
    cache = _cache_dir() / f"music21-{music21.__version__}-chorales.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=True) as data:
            return [np.asarray(p, dtype=np.float32) for p in data["train"]]
    pieces: list[np.ndarray] = []
    paths = sorted(str(p) for p in corpus.getComposer("bach"))
    for n, path in enumerate(paths):
        if progress:
            progress(n, len(paths))
        try:
            score = corpus.parse(path, forceSource=True)  # never music21's pickle cache (see midi.py)
        except Exception:  # a corpus file music21 itself cannot parse is skipped, not fatal
            continue
        if not hasattr(score, "parts"):
            continue
        piece = score_to_piece(score)
        if piece is not None and piece.shape[0] >= 8:
            pieces.append(piece)
    if not pieces:
        raise HarmonizerError("music21's corpus gave no four-part chorales", "reinstall music21==10.5.1")
    cache.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty(len(pieces), dtype=object)
    arr[:] = pieces
    with atomic_file(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, train=arr)
    return pieces


def load_dataset(dataset: str | Path, split: str = "train") -> list[np.ndarray]:
    """`music21` → the corpus chorales (one split: all of them); otherwise a JSB-style npz split."""
    if str(dataset) == MUSIC21:
        return load_music21_chorales()
    return load_npz(dataset, split)


def dataset_digest(pieces: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for p in pieces:
        h.update(np.nan_to_num(p, nan=-1).astype(np.int16).tobytes())
    return h.hexdigest()[:16]
