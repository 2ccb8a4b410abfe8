"""Fuzzed input files: MIDI (mutated real files), MusicXML, npz inputs for --load-inputs.

Each property: the reader returns a correct result or raises HarmonizerError (the CLI's one line, exit 2) —
never another exception (exit 70) — and never changes the input file."""

from __future__ import annotations

import io
import itertools
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.harmonize import sample_melody_notes
from harmonizer_deploy.music.midi import MAX_STEPS, Note, read_melody, write_melody_midi

pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name", "ignore::UserWarning:music21")

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "harmonizer_deploy" / "music" / "samples"


def _seed_midis() -> list[bytes]:
    """Real MIDI files to mutate: the bundled samples (when present) and one written here."""
    import tempfile

    seeds = [p.read_bytes() for p in sorted(SAMPLES.glob("*.mid"))]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_melody_midi(sample_melody_notes()[:8], Path(tmp) / "seed.mid", bpm=120)
        seeds.append(path.read_bytes())
    return seeds


SEED_MIDIS = _seed_midis()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed file with a few byte flips, insertions, deletions, or a truncation: mostly-valid structure, so the
    parser gets deep before it meets the damage."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x90, 0x99, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def check_melody(notes: list[Note]) -> None:
    """What a melody returned to the harmonizer must be: sorted, one note at a time, real pitches, bounded."""
    assert notes
    for a, b in itertools.pairwise(notes):
        assert a.start <= b.start and b.start >= a.end
    assert all(12 <= n.pitch <= 127 and n.end > n.start >= 0 for n in notes)
    assert notes[-1].end <= MAX_STEPS


def read_hostile(path: Path) -> tuple[list[Note], float] | None:
    before = path.read_bytes()
    try:
        result = read_melody(path)
    except HarmonizerError as exc:
        assert "\n" not in exc.one_line() and not exc.one_line().endswith("()")
        result = None
    assert path.read_bytes() == before
    return result


@fuzz(60)
@given(data=mutated(SEED_MIDIS))
def test_mutated_midi_reads_or_fails_cleanly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("midi") / "melody.mid"
    path.write_bytes(data)
    result = read_hostile(path)
    if result is not None:
        notes, bpm = result
        check_melody(notes)
        assert bpm > 0


@fuzz(40)
@given(data=st.binary(max_size=300).map(lambda b: b"MThd\x00\x00\x00\x06" + b))
def test_random_bytes_after_a_midi_header(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("midi") / "melody.mid"
    path.write_bytes(data)
    result = read_hostile(path)
    if result is not None:
        check_melody(result[0])


notes_strategy = st.lists(st.tuples(st.integers(0, 127), st.integers(1, 16), st.integers(0, 8)), min_size=1,
                          max_size=24)


@fuzz(40)
@given(spec=notes_strategy, channel=st.integers(0, 15), bpm=st.floats(1, 2000))
def test_written_melodies_read_back_exactly(tmp_path_factory, spec, channel, bpm):
    """A well-formed one-voice file reads back as the same notes (or a clear refusal: percussion channel, a
    pitch below MIDI 12, too long)."""
    notes, t = [], 0
    for pitch, length, rest in spec:
        t += rest
        notes.append(Note(pitch, t, t + length))
        t += length
    path = tmp_path_factory.mktemp("midi") / "melody.mid"
    write_melody_midi(notes, path, bpm=bpm)
    if channel:  # write_melody_midi uses channel 0; move every note to `channel`
        import mido

        mid = mido.MidiFile(str(path))
        for msg in mid.tracks[0]:
            if msg.type in ("note_on", "note_off"):
                msg.channel = channel
        mid.save(str(path))
    result = read_hostile(path)
    if channel == 9 or min(p for p, _, _ in spec) < 12:
        assert result is None
        return
    assert result is not None
    shift = (notes[0].start // 16) * 16
    assert result[0] == [Note(n.pitch, n.start - shift, n.end - shift) for n in notes]


MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1"><part-list><score-part id="P1"><part-name>M</part-name></score-part></part-list>
<part id="P1"><measure number="1"><attributes><divisions>{divisions}</divisions><time><beats>4</beats>
<beat-type>4</beat-type></time></attributes>{notes}</measure></part></score-partwise>"""
STEPS = ["C", "D", "E", "F", "G", "A", "B", "X", ""]


@st.composite
def musicxml(draw) -> str:
    notes = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            notes.append(f"<note><rest/><duration>{draw(st.integers(-2, 8))}</duration></note>")
            continue
        chord = "<chord/>" if draw(st.integers(0, 5)) == 0 else ""
        notes.append(f"<note>{chord}<pitch><step>{draw(st.sampled_from(STEPS))}</step>"
                     f"<octave>{draw(st.integers(-3, 12))}</octave></pitch>"
                     f"<duration>{draw(st.integers(-1, 8))}</duration></note>")
    text = MUSICXML.format(divisions=draw(st.sampled_from(["1", "4", "0", "-1", "x"])), notes="".join(notes))
    if draw(st.booleans()):  # damage the text too
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=6)) + text[at + draw(st.integers(0, 6)):]
    return text


@fuzz(12, deadline_ms=30_000)
@given(text=musicxml())
def test_musicxml_reads_or_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("xml") / "melody.musicxml"
    path.write_text(text, encoding="utf-8")
    result = read_hostile(path)
    if result is not None:
        check_melody(result[0])


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


SEED_NPZ = [_npz_bytes({"input_000": np.zeros((1, 4, 46, 8), np.float32)}),
            _npz_bytes({"input_000": np.ones((2, 2, 46, 8), np.float64), "input_001": np.zeros((1, 1, 46, 8),
                                                                                               np.float16)})]


def load_hostile_inputs(path: Path) -> list[np.ndarray] | None:
    from harmonizer_deploy.conversion.inputs import load_inputs

    before = path.read_bytes()
    try:
        arrays = load_inputs(path)
    except HarmonizerError as exc:
        assert "\n" not in exc.one_line() and not exc.one_line().endswith("()")
        arrays = None
    assert path.read_bytes() == before
    if arrays is not None:
        assert arrays and all(a.dtype == np.float32 and a.ndim == 4 and a.shape[2:] == (46, 8) for a in arrays)
    return arrays


@fuzz(60)
@given(data=mutated(SEED_NPZ))
def test_mutated_npz_inputs(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz") / "inputs.npz"
    path.write_bytes(data)
    load_hostile_inputs(path)


dtypes = st.sampled_from(["<f4", ">f4", "<f8", "<f2", "<i4", "|b1", "<c8", "|u1", "<U3", "|V4", "O"])


@fuzz(60)
@given(members=st.lists(st.tuples(st.sampled_from(["input_000.npy", "a.npy", "../x.npy", "b.txt", "dir/"]),
                                  dtypes, st.lists(st.integers(0, 2**33), max_size=5), st.integers(0, 64)),
                        max_size=3))
def test_crafted_npz_members(tmp_path_factory, members):
    """Hand-built members: any name, dtype and declared shape, with little or no data behind the header."""
    path = tmp_path_factory.mktemp("npz") / "inputs.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, dtype, shape, stored in members:
            header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
            header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
            zf.writestr(name, b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * stored)
    arrays = load_hostile_inputs(path)
    if arrays is not None:  # nothing was made up beyond what the file holds (every dtype stores ≥ 1 byte a value)
        assert sum(a.size for a in arrays) <= path.stat().st_size


@fuzz(25)
@given(data=mutated(SEED_MIDIS))
def test_cli_harmonize_on_mutated_midi_is_exit_2_in_one_line(tmp_path_factory, data):
    """Through the CLI: the melody is read before any backend opens, so an unknown backend makes every readable
    melody fail cheaply too — each run must be exit 2 with one `error:` line, never exit 70."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "melody.mid").write_bytes(data)
    result = CliRunner().invoke(app, ["harmonize", str(tmp / "melody.mid"), "-o", str(tmp / "out.mid"),
                                      "--backend", "no-such-backend"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and "Traceback" not in result.output
    assert (tmp / "melody.mid").read_bytes() == data and not (tmp / "out.mid").exists()
