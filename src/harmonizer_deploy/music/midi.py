"""Melodies in (MIDI via mido, MusicXML via music21) and four-part chorales out (MIDI, pianoroll PNG).

A melody is a list of `Note(pitch, start, end)` in 16th-note steps; bad input raises a HarmonizerError that
names the problem (not a file, no notes, overlapping notes, too long).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file
from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, STEPS_PER_QUARTER, VOICES

MAX_STEPS = 4096  # 256 quarter notes: beyond this Gibbs sampling takes too long to be a sensible request
TICKS_PER_BEAT = 480
STEPS_PER_BAR = 16
_MUSICXML = {".xml", ".musicxml", ".mxl"}
_META = ("time_signature", "key_signature", "set_tempo")
DRUM_CHANNEL = 9  # MIDI channel 10 (numbered from 0 here): General MIDI percussion
LOWEST_PITCH = 12  # C0: the lowest note of any instrument; MIDI 0-11 are below hearing as pitch
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Note:
    pitch: int
    start: int  # 16th-note steps
    end: int


@dataclass(frozen=True)
class MetaEvent:
    """A time signature, key signature or tempo change at a 16th-note step (kept from input to output)."""

    step: int
    kind: str  # one of _META
    attrs: tuple[tuple[str, object], ...]


@dataclass
class Score:
    """What a melody file holds: one or more monophonic lines, tempo, and the metadata the output keeps."""

    tracks: list[tuple[str, list[Note]]]
    bpm: float = 90.0
    meta: list[MetaEvent] = field(default_factory=list)
    steps_per_bar: int = STEPS_PER_BAR

    @property
    def notes(self) -> list[Note]:
        """The first line (the melody when the file was read as one line)."""
        return self.tracks[0][1]


def _steps_per_bar(numerator: int, denominator: int) -> int:
    return max(1, round(numerator * 4 * STEPS_PER_QUARTER / max(1, denominator)))


def _check_line(notes: list[Note], source: str) -> list[Note]:
    if notes:
        low = min(notes, key=lambda n: n.pitch)
        if low.pitch < LOWEST_PITCH or max(n.pitch for n in notes) > 127:
            bad = low if low.pitch < LOWEST_PITCH else max(notes, key=lambda n: n.pitch)
            raise HarmonizerError(f"{source} has pitch {bad.pitch} at step {bad.start}, outside MIDI "
                                  f"{LOWEST_PITCH}-127 (C0-G9)", "pass a melody in a singable register")
    notes = sorted(notes, key=lambda n: (n.start, n.pitch))
    for a, b in itertools.pairwise(notes):
        if b.start < a.end:
            raise HarmonizerError(
                f"{source} is polyphonic: pitch {a.pitch} at step {a.start} overlaps pitch {b.pitch} at step "
                f"{b.start} (16th notes)", "pass a single melody line (one note at a time)",
            )
    return notes


def _trim(lines: list[list[Note]], source: str, bar: int, meta: list[MetaEvent] | None = None
          ) -> tuple[list[list[Note]], list[MetaEvent]]:
    """Drop whole empty bars before the first note (bar alignment and any pickup are kept) and check length."""
    meta = meta or []
    if not any(lines):
        raise HarmonizerError(f"{source} contains no notes", "pass a file with a one-voice melody")
    first = min(n.start for line in lines for n in line)
    shift = (first // bar) * bar
    lines = [[Note(n.pitch, n.start - shift, n.end - shift) for n in line] for line in lines]
    meta = [MetaEvent(max(0, m.step - shift), m.kind, m.attrs) for m in meta]
    length = max(n.end for line in lines for n in line)
    if length > MAX_STEPS:
        raise HarmonizerError(
            f"{source} is too long: {length} 16th-note steps (at most {MAX_STEPS})", "harmonize it in parts"
        )
    return lines, meta


def _check_melody(notes: list[Note], source: str, bar: int = STEPS_PER_BAR) -> list[Note]:
    if not notes:
        raise HarmonizerError(f"{source} contains no notes", "pass a file with a one-voice melody")
    return _trim([_check_line(notes, source)], source, bar)[0][0]


def _warn_off_grid(source: str, moved: int, largest: float) -> None:
    """Say how much quantizing to 16ths changed the rhythm (stderr via logging; stdout stays the result)."""
    if moved:
        log.warning("warning: %s: %d note(s) were off the 16th-note grid and moved to it (largest shift %.2f of a "
                    "16th, %.3f beats); triplets and swing are approximated", source, moved, largest, largest / 4)


def read_midi_score(path: Path, keep_voices: bool = False) -> Score:
    """A MIDI file's notes quantized to 16ths (warning when that moves notes), its tempo and metadata.

    Without `keep_voices` all tracks are one melody line; with it each track holding notes is a line of its own
    (a given voice). Time signatures, key signatures and the tempo map are kept as MetaEvents.
    """
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
    drum_notes = 0
    tracks: list[tuple[str, list[Note]]] = []
    meta: list[MetaEvent] = []
    moved, largest = 0, 0.0

    def note(pitch: int, begin: int, finish: int) -> Note:
        """The note snapped to 16ths; counts it as moved when its start or end was off the grid."""
        nonlocal moved, largest
        a, b = begin * STEPS_PER_QUARTER / tpb, finish * STEPS_PER_QUARTER / tpb
        off = max(abs(a - round(a)), abs(b - round(b)))
        if off > 1e-6:
            moved, largest = moved + 1, max(largest, off)
        return Note(pitch, round(a), max(round(a) + 1, round(b)))

    for index, track in enumerate(mid.tracks):
        tick, active, notes, name = 0, {}, [], f"Track {index + 1}"
        for msg in track:
            tick += msg.time
            if msg.type == "track_name" and str(msg.name).strip():
                name = str(msg.name).strip()
            elif msg.type in ("note_on", "note_off") and msg.channel == DRUM_CHANNEL:
                drum_notes += msg.type == "note_on" and msg.velocity > 0  # drum sounds, not pitches: left out
            elif msg.type == "set_tempo" and msg.tempo <= 0:
                continue  # a tempo of 0 cannot be played back; the next valid one (or 90 bpm) stands
            elif msg.type in _META:
                attrs = {k: getattr(msg, k) for k in ("numerator", "denominator", "key", "tempo") if hasattr(msg, k)}
                meta.append(MetaEvent(round(tick * STEPS_PER_QUARTER / tpb), msg.type, tuple(attrs.items())))
            elif msg.type == "note_on" and msg.velocity > 0:
                if (msg.channel, msg.note) in active:
                    raise HarmonizerError(f"{path} is polyphonic: pitch {msg.note} restarts while sounding",
                                          "pass a single melody line")
                active[(msg.channel, msg.note)] = tick
            elif msg.type in ("note_off", "note_on") and (msg.channel, msg.note) in active:
                notes.append(note(msg.note, active.pop((msg.channel, msg.note)), tick))
        if notes:
            tracks.append((name, notes))
    if not tracks and drum_notes:
        raise HarmonizerError(f"{path} has only percussion: its {drum_notes} notes are on MIDI channel 10, which "
                              "holds drum sounds, not pitches", "pass a melody on any channel but 10")
    meta.sort(key=lambda m: m.step)
    bpm = next((mido.tempo2bpm(dict(m.attrs)["tempo"]) for m in meta if m.kind == "set_tempo"), 90.0)
    signature = next((dict(m.attrs) for m in meta if m.kind == "time_signature"), {"numerator": 4, "denominator": 4})
    bar = _steps_per_bar(int(signature["numerator"]), int(signature["denominator"]))
    _warn_off_grid(str(path), moved, largest)
    if not keep_voices:
        merged = [n for _, notes in tracks for n in notes]
        if not merged:
            raise HarmonizerError(f"{path} contains no notes", "pass a file with a one-voice melody")
        tracks = [("Melody", _check_line(merged, str(path)))]
    else:
        tracks = [(name, _check_line(notes, f"{path} track {name!r}")) for name, notes in tracks]
    lines, meta = _trim([notes for _, notes in tracks], str(path), bar, meta)
    return Score([(name, line) for (name, _), line in zip(tracks, lines, strict=True)], bpm, meta, bar)


def read_midi_melody(path: Path) -> tuple[list[Note], float]:
    """Notes of a one-voice MIDI file (all tracks together) quantized to 16ths, and its first tempo (bpm)."""
    score = read_midi_score(path)
    return score.notes, score.bpm


def _parse_musicxml(path: Path):
    try:
        from music21 import converter
    except ImportError as exc:
        raise HarmonizerError("reading MusicXML needs music21", "pip install music21==10.5.1") from exc
    try:
        # forceSource: never load music21's pickle cache (a world-writable folder, and stale when the file's
        # mtime is older than the cached copy)
        return converter.parse(str(path), forceSource=True)
    except Exception as exc:  # music21 raises many kinds on malformed files
        raise HarmonizerError(f"{path} is not readable MusicXML ({reason(exc)})", "pass a valid MusicXML") from exc


def read_musicxml_score(path: Path, keep_voices: bool = False) -> Score:
    """The parts of a MusicXML file (via music21): the first one, or each part with `keep_voices`."""
    score = _parse_musicxml(path)
    parts = list(getattr(score, "parts", [])) or [score]
    if not keep_voices:
        parts = parts[:1]
    tracks, moved, largest = [], 0, 0.0
    for index, part in enumerate(parts):
        notes = []
        for n in part.flatten().notes:
            if n.isChord:
                raise HarmonizerError(f"{path} is polyphonic: a chord at offset {n.offset}",
                                      "pass a single melody line")
            begin = float(n.offset) * STEPS_PER_QUARTER
            finish = float(n.offset + n.quarterLength) * STEPS_PER_QUARTER
            off = max(abs(begin - round(begin)), abs(finish - round(finish)))
            if off > 1e-6:
                moved, largest = moved + 1, max(largest, off)
            start = round(begin)
            notes.append(Note(n.pitch.midi, start, max(start + 1, round(finish))))
        if notes:
            name = str(getattr(part, "partName", "") or f"Part {index + 1}")
            tracks.append((name, _check_line(notes, f"{path} part {name!r}")))
    _warn_off_grid(str(path), moved, largest)
    bpm = 90.0
    marks = list(score.flatten().getElementsByClass("MetronomeMark"))
    if marks and marks[0].number and math.isfinite(float(marks[0].number)) and float(marks[0].number) > 0:
        bpm = float(marks[0].number)
    meta = []
    for ts in parts[0].flatten().getElementsByClass("TimeSignature"):
        attrs = (("numerator", int(ts.numerator)), ("denominator", int(ts.denominator)))
        meta.append(MetaEvent(round(float(ts.offset) * STEPS_PER_QUARTER), "time_signature", attrs))
    first = next((dict(m.attrs) for m in meta), {"numerator": 4, "denominator": 4})
    bar = _steps_per_bar(int(first["numerator"]), int(first["denominator"]))
    if not tracks:
        raise HarmonizerError(f"{path} contains no notes", "pass a file with a one-voice melody")
    lines, meta = _trim([notes for _, notes in tracks], str(path), bar, meta)
    return Score([(name, line) for (name, _), line in zip(tracks, lines, strict=True)], bpm, meta, bar)


def read_musicxml_melody(path: Path) -> tuple[list[Note], float]:
    """Notes of the first part of a MusicXML file (via music21)."""
    score = read_musicxml_score(path)
    return score.notes, score.bpm


def read_score(path: str | Path, keep_voices: bool = False) -> Score:
    """A melody file (MIDI or MusicXML) as a Score: one merged line, or one line per track/part."""
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"melody file not found: {path}", "pass a .mid or MusicXML file")
    if path.suffix.lower() in _MUSICXML:
        return read_musicxml_score(path, keep_voices)
    return read_midi_score(path, keep_voices)


def read_melody(path: str | Path) -> tuple[list[Note], float]:
    score = read_score(path)
    return score.notes, score.bpm


def melody_pitches(notes: list[Note], length: int | None = None) -> np.ndarray:
    """[T] MIDI pitch per 16th step (NaN = rest); T = the last note's end unless `length` is given."""
    line = np.full(length if length is not None else max(n.end for n in notes), np.nan, dtype=np.float32)
    for n in notes:
        line[n.start : n.end] = n.pitch
    return line


def write_melody_midi(notes: list[Note], path: str | Path, bpm: float = 90.0) -> Path:
    """A one-track MIDI of `notes` (used for the bundled sample and tests)."""
    return _write_tracks([("Melody", notes)], path, bpm)


def roll_to_notes(pitches: np.ndarray, bar: int = STEPS_PER_BAR) -> list[Note]:
    """[T] pitches (NaN = rest) → notes, merging repeated steps but restarting at each bar line."""
    notes: list[Note] = []
    t = 0
    while t < len(pitches):
        if np.isnan(pitches[t]):
            t += 1
            continue
        end = t + 1
        while end < len(pitches) and pitches[end] == pitches[t] and end % bar:
            end += 1
        notes.append(Note(int(pitches[t]), t, end))
        t = end
    return notes


def _meta_message(event: MetaEvent, tick: int):
    import mido

    attrs = dict(event.attrs)
    try:
        return mido.MetaMessage(event.kind, time=tick, **attrs)
    except (ValueError, TypeError, KeyError) as exc:  # e.g. a key signature mido cannot write back
        log.warning("warning: %s %s not kept in the output (%s)", event.kind, attrs, exc)
        return None


def _write_tracks(tracks: list[tuple[str, list[Note]]], path: str | Path, bpm: float,
                  meta: list[MetaEvent] | None = None) -> Path:
    """One track per line; track 0 also carries the tempo map, time and key signatures (`meta`, or one tempo)."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    per_step = TICKS_PER_BEAT // STEPS_PER_QUARTER
    if meta is None or not any(m.kind == "set_tempo" for m in meta):
        # the file format holds 1 µs to 16.7 s per quarter note; a tempo beyond that is written as its bound
        tempo = min(max(round(60_000_000 / bpm), 1), 0xFFFFFF) if math.isfinite(bpm) and bpm > 0 else 666_667
        meta = [MetaEvent(0, "set_tempo", (("tempo", tempo),)), *(meta or [])]
    for channel, (name, notes) in enumerate(tracks):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        events: list[tuple[int, int, int, MetaEvent | None]] = []
        if channel == 0:
            events += [(m.step * per_step, -1, i, m) for i, m in enumerate(meta)]
        for n in notes:
            events.append((n.start * per_step, 1, n.pitch, None))
            events.append((n.end * per_step, 0, n.pitch, None))
        now = 0
        for tick, on, pitch, event in sorted(events, key=lambda e: e[:3]):
            if event is not None:
                message = _meta_message(event, tick - now)
                if message is None:
                    continue
                track.append(message)
            else:
                kind = "note_on" if on else "note_off"
                track.append(mido.Message(kind, note=pitch, velocity=80 if on else 0, channel=channel,
                                          time=tick - now))
            now = tick
        mid.tracks.append(track)
    with atomic_file(path) as tmp:
        mid.save(str(tmp))
    return Path(path)


def write_chorale_midi(voices: list[list[Note]], path: str | Path, bpm: float = 90.0,
                       meta: list[MetaEvent] | None = None) -> Path:
    """Four tracks (Soprano, Alto, Tenor, Bass), one MIDI channel each; `meta` = the input's signatures/tempi."""
    return _write_tracks([(v.capitalize(), notes) for v, notes in zip(VOICES, voices, strict=True)], path, bpm,
                         meta)


def _music21_key(key_module, name: str):
    """A MIDI key-signature name (`C`, `Bbm`, `F#`) → music21 Key."""
    minor = name.endswith("m")
    tonic = name[:-1] if minor else name
    return key_module.Key(tonic[0] + tonic[1:].replace("b", "-"), "minor" if minor else "major")


def write_chorale_musicxml(voices: list[list[Note]], path: str | Path, bpm: float = 90.0,
                           meta: list[MetaEvent] | None = None) -> Path:
    """Four parts as MusicXML through music21, with the input's time/key signatures and first tempo."""
    try:
        from music21 import key, meter, note, stream, tempo
    except ImportError as exc:
        raise HarmonizerError("writing MusicXML needs music21", "pip install music21==10.5.1") from exc
    meta = meta or []
    score = stream.Score()
    for v, (voice, notes) in enumerate(zip(VOICES, voices, strict=True)):
        part = stream.Part()
        part.partName = voice.capitalize()
        if v == 0:
            part.insert(0, tempo.MetronomeMark(number=round(bpm, 2)))
        for m in meta:
            attrs = dict(m.attrs)
            offset = m.step / STEPS_PER_QUARTER
            if m.kind == "time_signature":
                part.insert(offset, meter.TimeSignature(f"{attrs['numerator']}/{attrs['denominator']}"))
            elif m.kind == "key_signature":
                try:
                    part.insert(offset, _music21_key(key, str(attrs["key"])))
                except Exception as exc:  # music21 raises several kinds for a name it does not know
                    log.warning("warning: key signature %s not kept in the MusicXML (%s)", attrs, exc)
        for n in notes:
            part.insert(n.start / STEPS_PER_QUARTER,
                        note.Note(n.pitch, quarterLength=(n.end - n.start) / STEPS_PER_QUARTER))
        score.insert(0, part)
    with atomic_file(path) as tmp:
        target = tmp.with_name(tmp.name + ".musicxml")
        try:
            score.makeNotation(inPlace=True)
            score.write("musicxml", fp=str(target))
            target.replace(tmp)
        finally:
            target.unlink(missing_ok=True)
    return Path(path)


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

