"""The musical quality figures (evaluate --musical): each counts what a musician would, on hand-made pieces."""

from __future__ import annotations

import json

import numpy as np

from harmonizer_deploy.music.evaluate import (
    musical_figures,
    musical_table,
    out_of_range,
    parallel_perfects,
    repeated_beats,
    voice_crossings,
)

NAN = np.nan


def _piece(*columns):
    """Columns S, A, T, B given as one pitch per beat → [T, 4] on the 16th grid."""
    return np.repeat(np.array(columns, dtype=np.float32).T, 4, axis=0)


def test_parallel_fifths_and_octaves_need_similar_motion():
    # S over A a fifth (G4/C4 → A4/D4) and S over B a compound fifth (G4/C3 → A4/D3), all moving up: two
    # parallel fifths; A over B an octave (C4/C3 → D4/D3): one parallel octave. The tenor holds: oblique.
    piece = _piece([67, 69], [60, 62], [55, 55], [48, 50])
    assert parallel_perfects(piece) == (2, 1)
    contrary = _piece([67, 62], [60, 55], [55, 55], [48, 50])  # S and A fall, B rises: fifths by contrary motion
    assert parallel_perfects(contrary)[0] == 1  # only S/A (both down, fifth → fifth); S/B and A/B are contrary
    rest = _piece([67, NAN, 69], [60, 60, 62], [55, 55, 55], [48, 48, 50])  # a rest breaks the chain
    assert parallel_perfects(rest)[0] == 0


def test_crossings_range_and_repeats():
    piece = _piece([72, 64, 72, 72], [67, 67, 67, 67], [60, 60, 60, 60], [48, 48, 30, 48])
    assert voice_crossings(piece) == 1  # the alto above the soprano once (one beat)
    assert out_of_range(piece, (3,)) == (4, 16)  # the bass at MIDI 30 for one beat
    assert repeated_beats(piece, (1, 2)) == (6, 6)  # alto and tenor never move
    figures = musical_figures([piece])
    assert figures["beats"] == 4 and figures["voice_crossings_per_100_beats"] == 25.0
    table = musical_table({"m": {"harmonized": figures, "bach": figures, "gibbs_steps": 3, "voice_leading": "off"}})
    assert "| `m` (3 Gibbs steps, voice leading off) |" in table and "| Bach (the same chorales) |" in table


def test_evaluate_musical_cli_on_a_tiny_dataset(tmp_path):
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    bach = _piece([67, 69, 71, 72], [64, 65, 67, 67], [60, 60, 62, 64], [48, 53, 55, 48])
    pieces = np.empty(2, dtype=object)
    pieces[:] = [bach, bach[:8]]
    np.savez(tmp_path / "tiny.npz", test=pieces)
    result = CliRunner().invoke(app, ["evaluate", "--dataset", str(tmp_path / "tiny.npz"), "--musical",
                                      "--model", "default", "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["harmonized"]["pieces"] == 2 and report["bach"]["beats"] == 6
    assert report["bach"]["parallels_per_100_beats"] == musical_figures([bach, bach[:8]])["parallels_per_100_beats"]
    assert report["harmonized"]["out_of_range_share"] == 0.0  # the sampler keeps voices in range
    assert set(report["within_2x_of_bach"]) == {"parallels_per_100_beats", "voice_crossings_per_100_beats"}
    assert report["voice_leading"] == "strict"  # the default
    nll = report["model_nll_per_note"]
    assert nll["masks_per_piece"] == 4 and nll["harmonized"] > 0 and nll["bach"] > 0
