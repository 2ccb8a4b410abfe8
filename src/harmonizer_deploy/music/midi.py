"""Melodies in (MIDI via mido, MusicXML via music21) and four-part chorales out (MIDI, pianoroll PNG).

A melody is a list of `Note(pitch, start, end)` in 16th-note steps; bad input raises a HarmonizerError that
names the problem (not a file, no notes, overlapping notes, too long).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file
from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.core.extras import require
from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, STEPS_PER_QUARTER, VOICES

MAX_STEPS = 4096  # 256 quarter notes: beyond this Gibbs sampling takes too long to be a sensible request
TICKS_PER_BEAT = 480
STEPS_PER_BAR = 16
_MUSICXML = {".xml", ".musicxml", ".mxl"}
DRUM_CHANNEL = 9  # MIDI channel 10 (numbered from 0 here): General MIDI percussion
LOWEST_PITCH = 12  # C0: the lowest note of any instrument; MIDI 0-11 are below hearing as pitch


@dataclass(frozen=True)
class Note:
    pitch: int
    start: int  # 16th-note steps
    end: int


def _check_melody(notes: list[Note], source: str) -> list[Note]:
    if not notes:
        raise HarmonizerError(f"{source} contains no notes", "pass a file with a one-voice melody")
    low = min(notes, key=lambda n: n.pitch)
    if low.pitch < LOWEST_PITCH or max(n.pitch for n in notes) > 127:
        bad = low if low.pitch < LOWEST_PITCH else max(notes, key=lambda n: n.pitch)
        raise HarmonizerError(f"{source} has pitch {bad.pitch} at step {bad.start}, outside MIDI {LOWEST_PITCH}-127 "
                              "(C0-G9)", "pass a melody in a singable register")
    notes = sorted(notes, key=lambda n: (n.start, n.pitch))
    for a, b in itertools.pairwise(notes):
        if b.start < a.end:
            raise HarmonizerError(
                f"{source} is polyphonic: pitch {a.pitch} at step {a.start} overlaps pitch {b.pitch} at step "
                f"{b.start} (16th notes)", "pass a single melody line (one note at a time)",
            )
    shift = (notes[0].start // STEPS_PER_BAR) * STEPS_PER_BAR  # drop leading empty bars, keep bar alignment
    notes = [Note(n.pitch, n.start - shift, n.end - shift) for n in notes]
    length = notes[-1].end
    if length > MAX_STEPS:
        raise HarmonizerError(
            f"{source} is too long: {length} 16th-note steps (at most {MAX_STEPS})", "harmonize it in parts"
        )
    return notes


def read_midi_melody(path: Path) -> tuple[list[Note], float]:
    """Notes of a one-voice MIDI file (all tracks together) quantized to 16ths, and its first tempo (bpm).

    Channel 10 (index 9) is General MIDI percussion: its notes are drum sounds, not pitches, so they are left
    out, and a file with nothing else is refused."""
    import mido

    try:
        mid = mido.MidiFile(str(path))
    except Exception as exc:  # mido raises many kinds (EOFError, KeySignatureError, …) on a malformed file
        raise HarmonizerError(f"{path} is not a readable MIDI file ({reason(exc)})", "pass a standard .mid file") \
            from exc
    tpb = mid.ticks_per_beat
    if not isinstance(tpb, int) or tpb <= 0:
        raise HarmonizerError(f"{path} has {tpb} ticks per beat (its time division must be a positive number of "
                              "ticks per quarter note)", "re-export the MIDI file with a metrical time division")
    tempo_bpm = 0.0
    notes: list[Note] = []
    drum_notes = 0
    for track in mid.tracks:
        tick, active = 0, {}
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo" and not tempo_bpm and msg.tempo > 0:
                tempo_bpm = mido.tempo2bpm(msg.tempo)
            if msg.type in ("note_on", "note_off") and msg.channel == DRUM_CHANNEL:
                drum_notes += msg.type == "note_on" and msg.velocity > 0
                continue
            if msg.type == "note_on" and msg.velocity > 0:
                if (msg.channel, msg.note) in active:
                    raise HarmonizerError(f"{path} is polyphonic: pitch {msg.note} restarts while sounding",
                                          "pass a single melody line")
                active[(msg.channel, msg.note)] = tick
            elif msg.type in ("note_off", "note_on") and (msg.channel, msg.note) in active:
                begin = active.pop((msg.channel, msg.note))
                start = round(begin * STEPS_PER_QUARTER / tpb)
                end = max(start + 1, round(tick * STEPS_PER_QUARTER / tpb))
                notes.append(Note(msg.note, start, end))
    if not notes and drum_notes:
        raise HarmonizerError(f"{path} has only percussion: its {drum_notes} notes are on MIDI channel 10, which "
                              "holds drum sounds, not pitches", "pass a melody on any channel but 10")
    return _check_melody(notes, str(path)), tempo_bpm or 90.0


def read_musicxml_melody(path: Path) -> tuple[list[Note], float]:
    """Notes of the first part of a MusicXML file (via music21)."""
    require("reading MusicXML", "music21")
    from music21 import converter

    try:
        # forceSource/storePickle: never load (or leave) music21's pickle cache in its world-writable scratch
        # folder: a planted pickle runs code, and a stale one (older mtime on the MusicXML) is the wrong melody
        score = converter.parse(str(path), format="musicxml", forceSource=True, storePickle=False)
    except Exception as exc:  # music21 raises many kinds on malformed files
        raise HarmonizerError(f"{path} is not readable MusicXML ({reason(exc)})", "pass a valid MusicXML") from exc
    parts = list(getattr(score, "parts", [])) or [score]
    notes = []
    for n in parts[0].flatten().notes:
        if n.isChord:
            raise HarmonizerError(f"{path} is polyphonic: a chord at offset {n.offset}", "pass a single melody line")
        start = round(float(n.offset) * STEPS_PER_QUARTER)
        notes.append(Note(n.pitch.midi, start, max(start + 1, round(float(n.offset + n.quarterLength) * 4))))
    bpm = 90.0
    marks = list(score.flatten().getElementsByClass("MetronomeMark"))
    if marks and marks[0].number and math.isfinite(float(marks[0].number)) and float(marks[0].number) > 0:
        bpm = float(marks[0].number)
    return _check_melody(notes, str(path)), bpm


def read_melody(path: str | Path) -> tuple[list[Note], float]:
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"melody file not found: {path}", "pass a .mid or MusicXML file")
    if path.suffix.lower() in _MUSICXML:
        return read_musicxml_melody(path)
    return read_midi_melody(path)


def melody_pitches(notes: list[Note]) -> np.ndarray:
    """[T] MIDI pitch per 16th step (NaN = rest)."""
    line = np.full(notes[-1].end, np.nan, dtype=np.float32)
    for n in notes:
        line[n.start : n.end] = n.pitch
    return line


def write_melody_midi(notes: list[Note], path: str | Path, bpm: float = 90.0) -> Path:
    """A one-track MIDI of `notes` (used for the bundled sample and tests)."""
    return _write_tracks([("Melody", notes)], path, bpm)


def roll_to_notes(pitches: np.ndarray) -> list[Note]:
    """[T] pitches (NaN = rest) → notes, merging repeated steps but restarting at each bar line."""
    notes: list[Note] = []
    t = 0
    while t < len(pitches):
        if np.isnan(pitches[t]):
            t += 1
            continue
        end = t + 1
        while end < len(pitches) and pitches[end] == pitches[t] and end % STEPS_PER_BAR:
            end += 1
        notes.append(Note(int(pitches[t]), t, end))
        t = end
    return notes


def _write_tracks(tracks: list[tuple[str, list[Note]]], path: str | Path, bpm: float) -> Path:
    import mido

    mid = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    per_step = TICKS_PER_BEAT // STEPS_PER_QUARTER
    for channel, (name, notes) in enumerate(tracks):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        if channel == 0:
            # the file format holds 1 µs to 16.7 s per quarter note; a tempo beyond that is written as its bound
            tempo = min(max(round(60_000_000 / bpm), 1), 0xFFFFFF) if math.isfinite(bpm) and bpm > 0 else 666_667
            track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
        events = []
        for n in notes:
            events.append((n.start * per_step, 1, n.pitch))
            events.append((n.end * per_step, 0, n.pitch))
        now = 0
        for tick, on, pitch in sorted(events):
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, note=pitch, velocity=80 if on else 0, channel=channel, time=tick - now))
            now = tick
        mid.tracks.append(track)
    with atomic_file(path) as tmp:
        mid.save(str(tmp))
    return Path(path)


def write_chorale_midi(voices: list[list[Note]], path: str | Path, bpm: float = 90.0) -> Path:
    """Four tracks (Soprano, Alto, Tenor, Bass), one MIDI channel each."""
    return _write_tracks([(v.capitalize(), notes) for v, notes in zip(VOICES, voices, strict=True)], path, bpm)


def write_pianoroll_png(pitches: np.ndarray, path: str | Path, title: str = "") -> Path:
    """[T, 4] pitches → a pianoroll picture, one colour per voice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, pitches.shape[0] / 16), 4))
    for v, voice in enumerate(VOICES):
        for n in roll_to_notes(pitches[:, v]):
            ax.broken_barh([(n.start, n.end - n.start)], (n.pitch - 0.4, 0.8), color=f"C{v}",
                           label=voice if n.start == roll_to_notes(pitches[:, v])[0].start else None)
    ax.set_xlabel("16th-note step")
    ax.set_ylabel("MIDI pitch")
    ax.set_ylim(MIN_PITCH - 1, MIN_PITCH + NUM_PITCHES)
    for bar in range(0, pitches.shape[0] + 1, STEPS_PER_BAR):
        ax.axvline(bar, color="0.85", lw=0.5, zorder=0)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)

