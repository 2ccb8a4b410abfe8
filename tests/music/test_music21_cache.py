"""Issue 15 §2: MusicXML is always parsed from the file itself, never from music21's pickle cache."""

from __future__ import annotations

import os
import time

import pytest

from harmonizer_deploy.music.midi import read_melody

music21 = pytest.importorskip("music21")


def _score(pitches):
    part = music21.stream.Part()
    for pitch in pitches:
        part.append(music21.note.Note(pitch, quarterLength=1))
    return music21.stream.Score([part])


def test_a_planted_newer_pickle_is_not_used_and_none_is_written(tmp_path, monkeypatch):
    from music21 import converter, freezeThaw

    scratch = tmp_path / "m21-scratch"  # stands in for the world-writable /tmp/music21
    scratch.mkdir()
    monkeypatch.setattr(converter.environLocal, "getRootTempDir", lambda: scratch)
    melody = tmp_path / "melody.musicxml"
    _score([60, 62, 64, 65]).write("musicxml", fp=str(melody))
    os.utime(melody, (time.time() - 3600, time.time() - 3600))  # as `cp -p`, tar or rsync -a leave it
    planted = converter.PickleFilter(melody).getPickleFp(scratch, zipType="gz")
    freezeThaw.StreamFreezer(_score([72, 71, 69, 67]), fastButUnsafe=True).write(fp=str(planted), zipType="zlib")
    assert planted.stat().st_mtime > melody.stat().st_mtime
    assert converter.parse(str(melody)).flatten().notes[0].pitch.midi == 72  # the cache would be used ...
    notes, _ = read_melody(melody)
    assert [n.pitch for n in notes] == [60, 62, 64, 65]  # ... but never by us
    planted.unlink()
    read_melody(melody)
    assert list(scratch.iterdir()) == []  # and we leave no pickle behind for others to load
