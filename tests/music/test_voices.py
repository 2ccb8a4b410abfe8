"""Harmonizations a musician would accept: the melody in the voice that fits it, given voices kept, off-grid
notes reported, and the input's metre, key, tempo map and pickup kept in MIDI and MusicXML output."""

from __future__ import annotations

import json
import logging

import mido
import numpy as np
import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.encoding import MIN_PITCH, VOICE_RANGES, VOICES
from harmonizer_deploy.music.harmonize import (
    assign_voices,
    choose_melody_voice,
    harmonize_notes,
    harmonize_voices,
    musical_problems,
)
from harmonizer_deploy.music.midi import Note, melody_pitches, read_score
from harmonizer_deploy.music.sampling import GibbsSettings
from harmonizer_deploy.run.jobs import harmonize_file
from melody_helpers import notes_of, uniform_network

# A bass-register tune (MIDI 43-50) and a soprano tune, as (pitch, 16ths).
BASS_TUNE = [(43, 4), (45, 4), (47, 4), (48, 4), (50, 8), (48, 4), (47, 4), (45, 4), (43, 8), (47, 4), (50, 8),
             (48, 4), (45, 4), (43, 16)]
SOPRANO_TUNE = [(67, 4), (67, 4), (74, 4), (74, 4), (76, 4), (76, 4), (74, 8), (72, 4), (72, 4), (71, 4), (71, 4),
                (69, 4), (69, 4), (67, 8)]


_notes, _uniform = notes_of, uniform_network


def _write(path, tracks, tpb=480, meta=(), per_step=None):
    """A MIDI file with one track per (name, [(pitch, start_tick, end_tick)]); `meta` goes on the first track."""
    mid = mido.MidiFile(ticks_per_beat=tpb)
    for i, (name, notes) in enumerate(tracks):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        events = [(tick, 0, m) for tick, m in meta] if i == 0 else []
        for pitch, a, b in notes:
            events += [(a, 2, mido.Message("note_on", note=pitch, velocity=80, channel=i)),
                       (b, 1, mido.Message("note_off", note=pitch, velocity=0, channel=i))]
        now = 0
        for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(message.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))
    return path


def _ticks(spec, per_step=120, start=0):
    return [(n.pitch, n.start * per_step, n.end * per_step) for n in _notes(spec, start)]


def _tracks(path):
    """{track name: [(pitch, start step, end step)]} of a written chorale."""
    mid = mido.MidiFile(str(path))
    out = {}
    for track in mid.tracks:
        tick, active, notes, name = 0, {}, [], ""
        for msg in track:
            tick += msg.time
            if msg.type == "track_name":
                name = msg.name
            elif msg.type == "note_on" and msg.velocity:
                active[msg.note] = tick
            elif msg.type in ("note_on", "note_off") and msg.note in active:
                notes.append((msg.note, active.pop(msg.note) // 120, tick // 120))
        out[name] = notes
    return out


def test_auto_picks_the_voice_whose_range_fits():
    assert choose_melody_voice(melody_pitches(_notes(BASS_TUNE))) == "bass"
    assert choose_melody_voice(melody_pitches(_notes(SOPRANO_TUNE))) == "soprano"
    assert choose_melody_voice(np.array([55.0, 57, 60, 62, 64])) == "tenor"
    assert choose_melody_voice(np.array([62.0, 64, 66, 69])) == "soprano"  # fits alto too: the top voice wins


def test_bass_register_tune_keeps_every_voice_in_range_uniform_model():
    """Sampler level: any melody voice, every infilled voice inside its range where it sounds."""
    for voice in VOICES:
        a = harmonize_notes(_notes(BASS_TUNE), _uniform, seed=1, settings=GibbsSettings(steps=3),
                            melody_voice=voice)
        assert musical_problems(a.melody, a.chorale, a.melody_voice) == [], voice
        np.testing.assert_array_equal(a.chorale[:, VOICES.index(voice)], melody_pitches(_notes(BASS_TUNE)))


def test_bass_register_tune_harmonizes_in_range_through_the_cli(tmp_path):
    """Acceptance: a bass tune (MIDI 43-50), auto voice, the bundled model: the tune is the bass note for note,
    every other voice inside its range (VOICE_RANGES, within the chorales' own ranges)."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    melody = _write(tmp_path / "bass.mid", [("Tune", _ticks(BASS_TUNE))])
    out = tmp_path / "out.mid"
    result = CliRunner().invoke(app, ["harmonize", str(melody), "-o", str(out), "--steps", "6", "--backend",
                                      "tensorflow", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["melody_voice"] == "bass" and report["transposed_semitones"] == 0
    tracks = _tracks(out)
    assert [(p, a, b) for p, a, b in tracks["Bass"]] == [(n.pitch, n.start, n.end) for n in _notes(BASS_TUNE)]
    for voice in ("soprano", "alto", "tenor"):
        low, high = VOICE_RANGES[voice]
        pitches = [p for p, _, _ in tracks[voice.capitalize()]]
        assert pitches and low <= min(pitches) and max(pitches) <= high, (voice, min(pitches), max(pitches))


def test_two_track_input_keeps_both_voices_note_for_note(tmp_path):
    soprano = _notes(SOPRANO_TUNE)
    bass = _notes([(55, 8), (52, 8), (48, 8), (50, 8), (55, 8), (47, 8), (48, 16)])
    for names in (("Soprano", "Bass"), ("Piano", "Cello")):  # by name, then by register
        melody = _write(tmp_path / "two.mid", [(names[0], _ticks(SOPRANO_TUNE)),
                                                (names[1], [(n.pitch, n.start * 120, n.end * 120) for n in bass])])
        out = tmp_path / "kept.mid"
        report = harmonize_file(melody, out, seed=2, steps=4, keep_voices=True)
        assert report["given_voices"] == ["soprano", "bass"]
        tracks = _tracks(out)
        assert tracks["Soprano"] == [(n.pitch, n.start, n.end) for n in soprano]
        assert tracks["Bass"] == [(n.pitch, n.start, n.end) for n in bass]
        for voice in ("alto", "tenor"):
            low, high = VOICE_RANGES[voice]
            assert all(low <= p <= high for p, _, _ in tracks[voice.capitalize()])


def test_keep_voices_refuses_what_it_cannot_do(tmp_path):
    assert assign_voices([("A", np.array([70.0, 72]))]) == [1]  # named alto: the name wins
    assert assign_voices([("Line", np.array([70.0, 72]))]) == [0]  # unnamed: by register
    with pytest.raises(HarmonizerError, match="needs 1 to 3 tracks"):
        assign_voices([(v, np.array([60.0])) for v in VOICES])
    with pytest.raises(HarmonizerError, match="nothing to infill"):
        harmonize_voices({v: [Note(60, 0, 4)] for v in range(4)}, _uniform)
    melody = _write(tmp_path / "m.mid", [("S", _ticks(SOPRANO_TUNE))])
    with pytest.raises(HarmonizerError, match="--melody-voice and --keep-voices"):
        harmonize_file(melody, tmp_path / "o.mid", keep_voices=True, melody_voice="alto")
    assert not (tmp_path / "o.mid").exists()


def test_off_grid_notes_are_reported_on_stderr(tmp_path, caplog):
    # a bar of eighth-note triplets (160 ticks each at 480 per beat) then quarters
    triplets = [(67 + (i % 3), i * 160, (i + 1) * 160) for i in range(6)] + [(72, 960, 1440), (71, 1440, 1920)]
    path = _write(tmp_path / "triplets.mid", [("M", triplets)])
    with caplog.at_level(logging.WARNING, logger="harmonizer_deploy.music.midi"):
        read_score(path)
    messages = [r.getMessage() for r in caplog.records]
    # every triplet starts or ends at 160, 320, 640 or 800 ticks, off the 120-tick grid: 6 moved, by 1/3 of a 16th
    assert any("6 note(s) were off the 16th-note grid" in m and "largest shift 0.33" in m for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harmonizer_deploy.music.midi"):
        read_score(_write(tmp_path / "grid.mid", [("M", _ticks(SOPRANO_TUNE))]))
    assert not caplog.records


def _waltz(tmp_path):
    """A 3/4 tune in F major with a one-beat pickup and a tempo change in bar 3."""
    pickup = [(72, 4)]
    tune = [*pickup, (77, 8), (76, 4), (74, 8), (72, 4), (70, 4), (69, 4), (67, 4), (65, 12)]
    meta = [(0, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
            (0, mido.MetaMessage("key_signature", key="F")),
            (0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120))),
            (480 * 7, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96)))]
    # the pickup: the tune starts on beat 3 of an otherwise empty first bar
    return _write(tmp_path / "waltz.mid", [("Melody", _ticks(tune, start=8))], meta=meta), _notes(tune, start=8)


def test_three_four_input_keeps_its_metre_key_tempo_map_and_pickup(tmp_path):
    melody, notes = _waltz(tmp_path)
    out = tmp_path / "waltz-chorale.mid"
    report = harmonize_file(melody, out, seed=0, steps=4)
    assert report["time_signatures"] == ["3/4"]
    mid = mido.MidiFile(str(out))
    metas, tick = [], 0
    for msg in mid.tracks[0]:
        tick += msg.time
        if msg.is_meta and msg.type != "track_name":
            metas.append((tick, msg.type, getattr(msg, "numerator", None), getattr(msg, "key", None),
                          round(mido.tempo2bpm(msg.tempo)) if msg.type == "set_tempo" else None))
    assert (0, "time_signature", 3, None, None) in metas
    assert (0, "key_signature", None, "F", None) in metas
    assert (0, "set_tempo", None, None, 120) in metas and (480 * 7, "set_tempo", None, None, 96) in metas
    soprano = _tracks(out)["Soprano"]
    assert soprano[0] == (72, 8, 12)  # the pickup still starts on beat 3 of the first 3/4 bar
    assert [p for p, _, _ in soprano] == [n.pitch for n in notes]


def test_musicxml_output_keeps_three_four(tmp_path):
    music21 = pytest.importorskip("music21")
    melody, notes = _waltz(tmp_path)
    out = tmp_path / "waltz.musicxml"
    harmonize_file(melody, out, seed=0, steps=4)
    score = music21.converter.parse(str(out), forceSource=True)
    assert len(score.parts) == 4
    signatures = {ts.ratioString for ts in score.flatten().getElementsByClass("TimeSignature")}
    assert signatures == {"3/4"}
    first = [n.pitch.midi for n in score.parts[0].flatten().notes]
    assert first[: len(notes)] == [n.pitch for n in notes] or first == [n.pitch for n in notes]
    back = read_score(out)  # and it reads back as a melody (first part) on the same grid
    assert back.notes[0] == Note(72, 8, 12) and back.steps_per_bar == 12


def test_musical_problems_names_a_changed_given_voice():
    melody = np.array([70.0, 70.0])
    chorale = np.array([[70, 65, 58, 50], [70, 65, 58, 50]], dtype=np.float32)
    assert musical_problems(melody, chorale, 0, {3: np.array([50.0, 50.0])}) == []
    assert musical_problems(melody, chorale, 0, {3: np.array([50.0, 48.0])}) == ["given bass changed at 1 steps"]
    low = chorale.copy()
    low[:, 1] = MIN_PITCH
    assert any("alto leaves its range" in p for p in musical_problems(melody, low))


def test_an_invalid_key_signature_is_a_clear_error(tmp_path):
    """mido raises KeySignatureError (not a ValueError) for 20 sharps: still one clear line, not exit 70."""
    path = _write(tmp_path / "key.mid", [("M", _ticks(SOPRANO_TUNE))],
                  meta=[(0, mido.MetaMessage("key_signature", key="C"))])
    data = bytearray(path.read_bytes())
    at = data.find(bytes([0xFF, 0x59, 0x02]))
    data[at + 3] = 20
    path.write_bytes(bytes(data))
    with pytest.raises(HarmonizerError, match=r"not a readable MIDI file.*20 sharps"):
        read_score(path)
