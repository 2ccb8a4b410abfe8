"""Strict voice leading in the sampler: the weights punish what evaluate counts, the draw obeys them, the page's
JS mirror gives the same numbers, and a harmonization with it writes (almost) no parallels or crossings."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harmonizer_deploy.music.encoding import MIN_PITCH, NUM_PITCHES, VOICE_RANGES, VOICES
from harmonizer_deploy.music.evaluate import parallel_perfects, voice_crossings
from harmonizer_deploy.music.harmonize import harmonize_notes, musical_problems
from harmonizer_deploy.music.midi import Note, melody_pitches
from harmonizer_deploy.music.sampling import GibbsSettings, gibbs, range_mask
from harmonizer_deploy.music.voice_leading import (
    CROSSING_FACTOR,
    PARALLEL_FACTOR,
    draw_with_voice_leading,
    voice_weights,
)

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "src/harmonizer_deploy/web/static/voice_leading.js"
NAN = np.nan


def _w(weights: np.ndarray, t: int, pitch: int) -> float:
    return float(weights[t, pitch - MIN_PITCH])


def test_a_planted_parallel_fifth_is_penalised_and_contrary_motion_is_not():
    # soprano G4 → A4 over alto C4 → ?: D4 would be a parallel fifth
    pitches = np.array([[67, 60, 52, 36], [69, NAN, 52, 36]], dtype=np.float64)
    w = voice_weights(pitches, 1)
    assert _w(w, 1, 62) == PARALLEL_FACTOR
    assert _w(w, 1, 65) == 1.0  # F4: a third below A4, no rule broken
    assert _w(w, 1, 60) == 1.0  # the alto holds C4: oblique motion
    # tenor C4 under soprano G4 (a fifth), soprano up to A4: tenor up to D4 is parallel, down to D3 contrary
    pitches = np.array([[67, 64, 60, 36], [69, 64, NAN, 36]], dtype=np.float64)
    w = voice_weights(pitches, 2)
    assert _w(w, 1, 62) == PARALLEL_FACTOR
    assert _w(w, 1, 50) == 1.0  # A4/D3 is a compound fifth, reached by contrary motion


def test_parallel_octaves_compound_and_toward_the_next_sonority():
    # bass C3 then D3 under soprano C5 → D5: parallel double octave, seen from the sonority after it (t+1)
    pitches = np.array([[72, 64, 57, NAN], [74, 65, 57, 50]], dtype=np.float64)
    w = voice_weights(pitches, 3)
    assert _w(w, 0, 48) == PARALLEL_FACTOR
    assert _w(w, 0, 53) == 1.0  # F3: C5/F3 a compound fifth, then D5/D3 an octave: not parallel
    # a rest in the other voice breaks the chain, as in evaluate.parallel_perfects
    chain = np.array([[72, 64, 57, 48], [74, 65, 57, NAN]], dtype=np.float64)
    assert _w(voice_weights(chain, 3), 1, 50) == PARALLEL_FACTOR
    chain[0, 0] = NAN
    assert _w(voice_weights(chain, 3), 1, 50) == 1.0


def test_crossing_is_refused_only_between_adjacent_voices():
    pitches = np.array([[67, NAN, 60, 48]], dtype=np.float64)
    w = voice_weights(pitches, 1)  # the alto between soprano G4 and tenor C4
    assert _w(w, 0, 68) == CROSSING_FACTOR  # above the soprano
    assert _w(w, 0, 59) == CROSSING_FACTOR  # below the tenor
    assert _w(w, 0, 67) == 1.0 and _w(w, 0, 60) == 1.0  # unisons are not crossings
    assert _w(w, 0, 64) == 1.0
    w = voice_weights(np.array([[67, 64, 60, NAN]]), 3)  # the bass: only the tenor is its neighbour
    assert _w(w, 0, 61) == CROSSING_FACTOR and _w(w, 0, 60) == 1.0


def test_draw_obeys_the_weights_and_is_deterministic():
    rng = np.random.default_rng(0)
    t = 6
    pitches = np.full((t, 4), NAN)
    pitches[:, 0] = [67, 69, 71, 72, 71, 69]
    cells = np.zeros((t, 4), dtype=bool)
    cells[:, 1:] = True
    p = rng.random((t, NUM_PITCHES, 4)) * range_mask()
    u = rng.random((t, 4))
    idx = draw_with_voice_leading(p, pitches, cells, u)
    np.testing.assert_array_equal(idx, draw_with_voice_leading(p, pitches, cells, u))
    chorale = pitches.copy()
    chorale[:, 1:] = MIN_PITCH + idx[:, 1:]
    assert parallel_perfects(chorale) == (0, 0) and voice_crossings(chorale) == 0
    for v in (1, 2, 3):
        low, high = VOICE_RANGES[VOICES[v]]
        assert chorale[:, v].min() >= low and chorale[:, v].max() <= high
    # a network certain of one crossing pitch still gets it: the rules weigh candidates, never rule one out
    only = np.zeros((1, NUM_PITCHES, 4))
    only[0, 70 - MIN_PITCH, 1] = 1.0
    one = np.array([[67, NAN, 60, 48]])
    drawn = draw_with_voice_leading(only, one, np.array([[False, True, False, False]]), np.array([[0.0, 0.5, 0, 0]]))
    assert drawn[0, 1] == 70 - MIN_PITCH


def _random_model(seed: int):
    """A 'network' that prefers random pitches per cell, fixed per call shape: many parallels when unchecked."""
    def run(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed + x.shape[1])
        z = rng.random((*x.shape[:3], 4)) ** 8
        return (z / z.sum(axis=2, keepdims=True)).astype(np.float32)
    return run


def test_gibbs_strict_removes_parallels_and_crossings_that_off_writes():
    notes = [Note(p, 4 * i, 4 * i + 4) for i, p in enumerate([67, 69, 71, 72, 74, 72, 71, 69, 67, 66, 67, 67])]
    run = _random_model(1)
    off = harmonize_notes(notes, run, 0, GibbsSettings(steps=6, voice_leading="off"), melody_voice="soprano")
    strict = harmonize_notes(notes, run, 0, GibbsSettings(steps=6), melody_voice="soprano")
    again = harmonize_notes(notes, run, 0, GibbsSettings(steps=6), melody_voice="soprano")
    np.testing.assert_array_equal(strict.chorale, again.chorale)  # deterministic from the seed
    assert sum(parallel_perfects(off.chorale)) + voice_crossings(off.chorale) >= 3  # the test can fail
    assert sum(parallel_perfects(strict.chorale)) == 0 and voice_crossings(strict.chorale) == 0
    assert musical_problems(strict.melody, strict.chorale) == []  # melody kept, every voice in range
    np.testing.assert_array_equal(strict.chorale[:, 0], melody_pitches(notes))


def test_off_is_the_sampler_without_voice_leading():
    """`off` keeps the plain inverse-CDF draw: a network certain of a parallel-making pitch gets it."""
    roll = np.zeros((2, NUM_PITCHES, 4), np.float32)
    roll[[0, 1], [67 - MIN_PITCH, 69 - MIN_PITCH], 0] = 1
    known = np.zeros((2, 4), bool)
    known[:, 0] = True

    def certain(x):  # alto C4 → D4 under G4 → A4
        p = np.full((*x.shape[:3], 4), 1e-7, np.float32)  # certain whatever the uniform draw
        p[0, 0, 60 - MIN_PITCH, 1] = p[0, 1, 62 - MIN_PITCH, 1] = 1.0
        return p

    out = gibbs(certain, roll, known, 0, GibbsSettings(steps=1, voice_leading="off"))
    assert list(out[:, :, 1].argmax(axis=1) + MIN_PITCH) == [60, 62]
    out = gibbs(certain, roll, known, 0, GibbsSettings(steps=1))
    assert list(out[:, :, 1].argmax(axis=1) + MIN_PITCH) != [60, 62]
    with pytest.raises(ValueError, match="voice-leading"):
        GibbsSettings(voice_leading="loose")


def _node_cases(n: int) -> list[dict]:
    rng = np.random.default_rng(42)
    cases = []
    for i in range(n):
        t = int(rng.integers(1, 12))
        pitches = rng.integers(40, 80, (t, 4)).astype(np.float64)
        pitches[rng.random((t, 4)) < 0.15] = np.nan
        if i % 3 == 0:  # many perfect intervals: voices a fifth/octave apart moving together
            base = rng.integers(50, 60, t)
            pitches = np.stack([base + 19, base + 12, base + 7, base - 12], axis=1).astype(np.float64)
        cells = rng.random((t, 4)) < 0.6
        p = rng.random((t, NUM_PITCHES, 4)) ** 4 * range_mask()
        u = rng.random((t, 4))
        cases.append({"pitches": pitches, "cells": cells, "p": p, "u": u, "t": t})
    return cases


def test_js_mirror_gives_the_same_weights_and_pitches(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JS mirror of voice_leading cannot be run")
    cases = _node_cases(40)
    payload = [{"pitches": [None if np.isnan(x) else x for x in c["pitches"].ravel()],
                "cells": c["cells"].ravel().astype(int).tolist(), "p": c["p"].ravel().tolist(),
                "u": c["u"].ravel().tolist(), "t": c["t"]} for c in cases]
    (tmp_path / "cases.json").write_text(json.dumps(payload))
    script = tmp_path / "run.mjs"
    script.write_text(f"""
import {{ readFileSync }} from "node:fs";
import {{ voiceWeights, drawWithVoiceLeading }} from "{JS.as_uri()}";
const cases = JSON.parse(readFileSync("{(tmp_path / 'cases.json').as_posix()}", "utf8"));
const out = cases.map((c) => {{
  const pitches = c.pitches.map((x) => (x === null ? NaN : x));
  const weights = [0, 1, 2, 3].map((v) => Array.from(voiceWeights(pitches, c.t, v)));
  return {{ weights, idx: Array.from(drawWithVoiceLeading(c.p, pitches, c.cells, c.u, c.t)) }};
}});
process.stdout.write(JSON.stringify(out));
""")
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for c, js in zip(cases, results, strict=True):
        for v in range(4):
            np.testing.assert_array_equal(np.array(js["weights"][v]).reshape(c["t"], NUM_PITCHES),
                                          voice_weights(c["pitches"], v))
        idx = draw_with_voice_leading(c["p"], c["pitches"], c["cells"], c["u"])
        np.testing.assert_array_equal(np.array(js["idx"]).reshape(c["t"], 4), idx)


@pytest.mark.slow
def test_harmonize_cli_with_strict_voice_leading_on_the_bundled_model(tmp_path):
    """End to end: the small bundled model (TensorFlow), a short tune, 8 Gibbs steps, `--voice-leading strict`:
    at most one parallel fifth/octave and no crossing in the written chorale (~60 s with TensorFlow's start)."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app
    from harmonizer_deploy.music.midi import write_melody_midi

    tune = [67, 67, 74, 74, 76, 76, 74, 74, 72, 72, 71, 71, 69, 69, 67, 67]
    melody = write_melody_midi([Note(p, 4 * i, 4 * i + 4) for i, p in enumerate(tune)], tmp_path / "m.mid")
    args = ["harmonize", str(melody), "-o", str(tmp_path / "out.mid"), "--model", "default", "--steps", "8",
            "--melody-voice", "soprano", "--no-build", "--json"]
    result = CliRunner().invoke(app, [*args, "--voice-leading", "strict"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["voice_leading"] == "strict"
    chorale = np.array([report["voices"][v] for v in VOICES], dtype=np.float64).T
    assert sum(parallel_perfects(chorale)) <= 1 and voice_crossings(chorale) == 0


def test_unknown_voice_leading_mode_is_one_clear_error(tmp_path):
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app
    from harmonizer_deploy.core.errors import HarmonizerError
    from harmonizer_deploy.run.jobs import evaluate_musical_dataset, harmonize_file

    result = CliRunner().invoke(app, ["harmonize", "m.mid", "--voice-leading", "loose", "--no-build"])
    assert result.exit_code == 2 and "loose" in result.output
    with pytest.raises(HarmonizerError, match="unknown voice-leading mode 'loose'"):
        harmonize_file(tmp_path / "m.mid", tmp_path / "o.mid", voice_leading="loose")
    with pytest.raises(HarmonizerError, match="unknown voice-leading mode"):
        evaluate_musical_dataset(tmp_path / "none.npz", voice_leading="loose")
    assert list(tmp_path.iterdir()) == []
