"""Training (seeded, resumable) and the note-wise NLL evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.data import from_pianoroll, load_npz, to_pianoroll
from harmonizer_deploy.music.encoding import NUM_PITCHES, random_chorale
from harmonizer_deploy.music.evaluate import evaluate
from harmonizer_deploy.music.model import load_weights_npz
from harmonizer_deploy.music.train import TrainSettings, orderless_mask, train

JSB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "Jsb16thSeparated.npz"
needs_jsb = pytest.mark.skipif(not JSB.is_file(), reason=f"JSB chorales not available at {JSB} (../shared absent)")


def _pieces(n: int, t: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [from_pianoroll(random_chorale(rng, t)) for _ in range(n)]


@pytest.fixture
def tiny_dataset(tmp_path):
    path = tmp_path / "tiny.npz"
    arrays = {}
    for split, seed in (("train", 0), ("test", 1)):
        arr = np.empty(4, dtype=object)
        arr[:] = _pieces(4, 40, seed)
        arrays[split] = arr
    np.savez(path, **arrays)
    return path


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text("num_layers = 4\nnum_filters = 8\n")
    return str(path)


def test_pianoroll_round_trip_keeps_rests():
    piece = np.array([[70, 65, np.nan, 48], [72, 65, 60, 48]], dtype=np.float32)
    np.testing.assert_array_equal(from_pianoroll(to_pianoroll(piece)), piece)
    with pytest.raises(HarmonizerError, match="outside"):
        to_pianoroll(np.array([[90, 65, 60, 48]], dtype=np.float32))


def test_orderless_mask_sizes_cover_the_range():
    rng = np.random.default_rng(0)
    sizes = [int(orderless_mask(rng, 8).sum()) for _ in range(400)]
    assert min(sizes) >= 1 and max(sizes) <= 32 and len(set(sizes)) > 20


def test_training_is_seeded_and_resumes_exactly(tmp_path, tiny_dataset, tiny_config):
    settings = TrainSettings(dataset=str(tiny_dataset), config=tiny_config, steps=6, batch_size=2, crop=16,
                             checkpoint_every=3)
    straight = train(settings, tmp_path / "a")
    assert straight.steps == 6 and np.isfinite(straight.final_loss)
    # stop after 3 steps (a bounded session), then the same command continues to 6
    train(settings, tmp_path / "b", stop_after=3)
    resumed = train(settings, tmp_path / "b")
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    a, b = load_weights_npz(tmp_path / "a" / "model.npz"), load_weights_npz(tmp_path / "b" / "model.npz")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "a" / "model.toml").is_file() and (tmp_path / "a" / "model.json").is_file()
    other = TrainSettings(**{**settings.to_dict(), "batch_size": 3})
    with pytest.raises(HarmonizerError, match="different settings"):
        train(other, tmp_path / "b")


def test_evaluate_scores_certain_and_uniform_models():
    pieces = _pieces(3, 24, 2)
    rolls = {p.tobytes(): to_pianoroll(p) for p in pieces}

    def oracle(x):  # knows the answer: NLL 0
        out = []
        for xi in x:
            masked = xi[..., 4:] > 0
            for p in pieces:
                r = rolls[p.tobytes()]
                if np.array_equal(xi[..., :4], r * ~masked):
                    out.append(np.where(r.sum(axis=1, keepdims=True) > 0, r, 1.0 / NUM_PITCHES))
                    break
        return np.stack(out)

    assert evaluate(oracle, pieces, masks=4)["nll_per_note"] == pytest.approx(0.0, abs=1e-9)
    uniform = evaluate(lambda x: np.full((*x.shape[:3], 4), 1 / NUM_PITCHES), pieces, masks=4)
    assert uniform["nll_per_note"] == pytest.approx(np.log(NUM_PITCHES))
    assert uniform["notes"] == sum(int((~np.isnan(p)).sum()) for p in pieces)


@needs_jsb
def test_jsb_splits_have_the_published_sizes():
    assert [len(load_npz(JSB, s)) for s in ("train", "valid", "test")] == [229, 76, 77]


@needs_jsb
def test_bundled_model_beats_chance_on_held_out_chorales():
    """The shipped weights are trained: far below the uniform 3.83 nats/note on JSB test pieces."""
    from harmonizer_deploy.music.model import load_bundled

    model, _, info = load_bundled()
    assert info.get("trained") is True
    result = evaluate(lambda x: np.asarray(model(x, training=False)), load_npz(JSB, "test")[:4], masks=4)
    assert result["nll_per_note"] < 1.5


def test_music21_chorale_becomes_satb_piece():
    """One chorale from music21's offline corpus (the default training data) parses to [time, 4]."""
    pytest.importorskip("music21")
    from music21 import corpus

    from harmonizer_deploy.music.data import score_to_piece

    piece = score_to_piece(corpus.parse("bach/bwv10.7"))
    assert piece is not None and piece.shape[1] == 4 and piece.shape[0] % 4 == 0
    assert np.nanmin(piece[:, 0]) > np.nanmax(piece[:, 3]) - 12  # soprano sits above the bass
    to_pianoroll(piece)
