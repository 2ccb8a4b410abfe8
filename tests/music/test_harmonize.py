"""The harmonizer: sampler, MIDI in/out, musical checks, and agreement across backends."""

from __future__ import annotations

import mido
import numpy as np
import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, VOICE_RANGES
from harmonizer_deploy.music.harmonize import (
    SAMPLE_MELODY,
    harmonize_notes,
    musical_problems,
    sample_melody_notes,
    soprano_shift,
)
from harmonizer_deploy.music.midi import MAX_STEPS, Note, melody_pitches, read_melody, write_melody_midi
from harmonizer_deploy.music.sampling import GibbsSettings, gibbs, windowed_probs, yao_probability
from harmonizer_deploy.run.jobs import harmonize_file
from melody_helpers import notes_of, uniform_network

# A melody the model never trained on (not a chorale): "Twinkle, Twinkle" in G, as (pitch, 16ths).
TWINKLE = [(67, 4), (67, 4), (74, 4), (74, 4), (76, 4), (76, 4), (74, 8),
           (72, 4), (72, 4), (71, 4), (71, 4), (69, 4), (69, 4), (67, 8)]


_notes, _uniform = notes_of, uniform_network


def test_yao_schedule_matches_the_doodle():
    s = GibbsSettings()
    assert yao_probability(0, 96, s) == pytest.approx(0.9 / 0.7)
    assert yao_probability(48, 96, s) == pytest.approx(0.5 / 0.7)
    assert yao_probability(95, 96, s) == pytest.approx(max(0.1, (0.9 - 0.8 * 95 / 96) / 0.7))
    assert yao_probability(96, 96, s) == pytest.approx(0.1 / 0.7)
    assert yao_probability(96, 96, GibbsSettings(alpha=2.0)) == 0.1


def test_gibbs_keeps_known_cells_stays_in_range_and_is_seeded():
    t = 24
    roll = np.zeros((t, NUM_PITCHES, 4), np.float32)
    roll[np.arange(t), 70 - MIN_PITCH, 0] = 1
    known = np.zeros((t, 4), bool)
    known[:, 0] = True
    a = gibbs(_uniform, roll, known, seed=5, settings=GibbsSettings(steps=5))
    b = gibbs(_uniform, roll, known, seed=5, settings=GibbsSettings(steps=5))
    c = gibbs(_uniform, roll, known, seed=6, settings=GibbsSettings(steps=5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[:, :, 0], roll[:, :, 0])
    assert (a.sum(axis=1) == 1).all()
    for v, voice in enumerate(("soprano", "alto", "tenor", "bass")):
        if v:
            pitches = a[:, :, v].argmax(axis=1) + MIN_PITCH
            low, high = VOICE_RANGES[voice]
            assert pitches.min() >= low and pitches.max() <= high


def test_inverse_cdf_follows_the_probabilities():
    """A model that is certain of one pitch per voice must be sampled exactly."""
    want = np.array([70, 62, 55, 43]) - MIN_PITCH

    def certain(x):
        p = np.zeros((*x.shape[:3], 4), np.float32)
        p[:, :, want, np.arange(4)] = 1.0
        return p

    t = 8
    roll = np.zeros((t, NUM_PITCHES, 4), np.float32)
    roll[:, want[0], 0] = 1
    known = np.zeros((t, 4), bool)
    known[:, 0] = True
    out = gibbs(certain, roll, known, seed=0, settings=GibbsSettings(steps=3))
    assert (out.argmax(axis=1) == want).all()


def test_windowed_probs_cover_a_long_piece_like_one_call():
    """With a position-wise model, overlapping windows must give exactly what one whole-piece call gives."""
    rng = np.random.default_rng(0)
    roll = np.zeros((50, NUM_PITCHES, 4), np.float32)
    roll[np.arange(50)[:, None], rng.integers(0, NUM_PITCHES, (50, 4)), np.arange(4)] = 1
    mask = np.broadcast_to((rng.random((50, 1, 4)) < 0.5), roll.shape).astype(np.float32)

    def local(x):  # position-wise "network": softmax of the input channels, no time context
        z = np.exp(x[..., :4] + 2 * x[..., 4:])
        return z / z.sum(axis=2, keepdims=True)

    whole = windowed_probs(local, roll, mask, None)
    np.testing.assert_allclose(windowed_probs(local, roll, mask, 16), whole, rtol=1e-6)
    with pytest.raises(ValueError, match="shorter"):
        windowed_probs(local, roll[:8], mask[:8], 16)


def test_soprano_shift():
    assert soprano_shift(np.array([62.0, 69.0])) == 0
    assert soprano_shift(np.array([50.0, 57.0])) == 12
    assert soprano_shift(np.array([85.0, 90.0])) == -12
    assert soprano_shift(np.array([57.0, 77.0])) == 3  # no octave fits: the smallest shift that does
    with pytest.raises(HarmonizerError, match="spans 30 semitones"):
        soprano_shift(np.array([50.0, 80.0]))


def test_musical_problems_catches_changed_melody_and_range():
    melody = np.array([70.0, 70.0, 72.0])
    good = np.array([[70, 65, 58, 50], [70, 65, 58, 50], [72, 67, 60, 48]], dtype=np.float32)
    assert musical_problems(melody, good) == []
    bad = good.copy()
    bad[1, 0] = 71
    bad[2, 3] = 30
    problems = musical_problems(melody, bad)
    assert any("melody changed at 1" in p for p in problems)
    assert any("bass leaves its range" in p for p in problems)


def test_midi_reading_errors(tmp_path):
    with pytest.raises(HarmonizerError, match="not found"):
        read_melody(tmp_path / "none.mid")
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"not midi at all")
    with pytest.raises(HarmonizerError, match="not a readable MIDI"):
        read_melody(junk)
    empty = tmp_path / "empty.mid"
    write_melody_midi([], empty)
    with pytest.raises(HarmonizerError, match="no notes"):
        read_melody(empty)
    chordal = tmp_path / "chord.mid"
    write_melody_midi([Note(60, 0, 4), Note(64, 2, 6)], chordal)
    with pytest.raises(HarmonizerError, match="polyphonic"):
        read_melody(chordal)
    long = tmp_path / "long.mid"
    write_melody_midi([Note(60, i * 4, i * 4 + 4) for i in range(MAX_STEPS // 4 + 1)], long)
    with pytest.raises(HarmonizerError, match="too long"):
        read_melody(long)


def test_midi_round_trip_keeps_repeated_notes_and_bar_alignment(tmp_path):
    notes = _notes(TWINKLE, start=32)  # two empty bars first: dropped, bar alignment kept
    path = write_melody_midi(notes, tmp_path / "m.mid", bpm=100)
    back, bpm = read_melody(path)
    assert back == _notes(TWINKLE) and round(bpm) == 100


def test_musicxml_melody(tmp_path):
    music21 = pytest.importorskip("music21")
    part = music21.stream.Part()
    for pitch, length in TWINKLE:
        part.append(music21.note.Note(pitch, quarterLength=length / 4))
    path = tmp_path / "m.musicxml"
    music21.stream.Score([part]).write("musicxml", fp=str(path))
    notes, _ = read_melody(path)
    assert [(n.pitch, n.end - n.start) for n in notes] == TWINKLE


def test_sample_melody_is_bundled_and_matches_its_notes():
    notes, _ = read_melody(SAMPLE_MELODY)
    assert notes == sample_melody_notes()


def test_harmonize_bundled_model_passes_musical_checks_and_is_deterministic(tmp_path):
    """The bundled model (TensorFlow) on a melody it never saw; few Gibbs steps keep it fast."""
    from harmonizer_deploy.music.model import load_bundled

    model, _, _ = load_bundled()

    def run(x):
        return np.asarray(model(x, training=False))

    notes = _notes(TWINKLE)
    a = harmonize_notes(notes, run, seed=3, settings=GibbsSettings(steps=8))
    b = harmonize_notes(notes, run, seed=3, settings=GibbsSettings(steps=8))
    np.testing.assert_array_equal(a.chorale, b.chorale)
    assert musical_problems(a.melody, a.chorale) == []
    np.testing.assert_array_equal(a.chorale[:, 0], melody_pitches(notes))


def test_harmonize_transposes_out_of_range_melody_back(tmp_path):
    """A soprano forced below its range is transposed up for the model; the infilled voices' ranges move with
    it, so once transposed back every voice is in its range (before, they ended two octaves too low)."""
    low = [(p - 24, n) for p, n in TWINKLE]  # two octaves down: below the soprano range
    a = harmonize_notes(_notes(low), _uniform, seed=0, settings=GibbsSettings(steps=3), melody_voice="soprano")
    assert a.shift == 24
    np.testing.assert_array_equal(a.chorale[:, 0], melody_pitches(_notes(low)))
    assert musical_problems(a.melody, a.chorale) == []


def _agreement(a: dict, b: dict) -> float:
    same = total = 0
    for voice in ("alto", "tenor", "bass"):
        x, y = np.array(a["voices"][voice], float), np.array(b["voices"][voice], float)
        same += int((x == y).sum())
        total += x.size
    return same / total


def test_harmonize_file_agrees_across_backends(built, small_keras, tmp_path):
    """tensorflow, onnxruntime and tvm-cpu on the same seed: ≥99% identical sampled notes, four MIDI tracks."""
    melody = write_melody_midi(_notes(TWINKLE), tmp_path / "twinkle.mid")
    results = {}
    for backend in ("tensorflow", "onnxruntime", "tvm-cpu"):
        out = tmp_path / f"{backend}.mid"
        results[backend] = harmonize_file(melody, out, backend=backend, build_dir=built, model=small_keras,
                                          seed=11, steps=12, png=tmp_path / f"{backend}.png")
        mid = mido.MidiFile(str(out))
        assert [t.name for t in mid.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
        assert (tmp_path / f"{backend}.png").stat().st_size > 1000
    for backend in ("onnxruntime", "tvm-cpu"):
        assert _agreement(results["tensorflow"], results[backend]) >= 0.99, backend


def test_harmonize_file_rejects_unknown_backend(tmp_path):
    with pytest.raises(HarmonizerError, match="unknown backend"):
        harmonize_file(SAMPLE_MELODY, tmp_path / "o.mid", backend="nope")
    assert not (tmp_path / "o.mid").exists()


@pytest.mark.slow
def test_bundled_model_harmonizes_the_sample_alike_on_three_backends(tmp_path):
    """Acceptance: the bundled model, the Doodle's 96 Gibbs steps, tensorflow vs onnxruntime vs tvm-cpu."""
    from harmonizer_deploy import compile, convert

    build = tmp_path / "build"
    convert(None, build / "model.onnx")
    compile(build / "model.onnx", "cpu", build / "cpu")
    melody = write_melody_midi(_notes(TWINKLE * 2), tmp_path / "twinkle.mid")
    results = {b: harmonize_file(melody, tmp_path / f"{b}.mid", backend=b, build_dir=build, seed=0, steps=96)
               for b in ("tensorflow", "onnxruntime", "tvm-cpu")}
    for backend in ("onnxruntime", "tvm-cpu"):
        assert _agreement(results["tensorflow"], results[backend]) >= 0.99, backend
