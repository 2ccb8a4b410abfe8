"""The Bach Doodle's own Coconet shipped as bundled model `bach-doodle`, in its quantized TF.js form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harmonizer_deploy.core.artifacts import sha256_file
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music import model as model_module
from harmonizer_deploy.music.config import load_config
from harmonizer_deploy.music.model import BUNDLED_SHA256, WEIGHTS_DIR, bundled_models, load_bundled

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
DOODLE = SHARED / "bach-doodle"
JSB = SHARED / "Jsb16thSeparated.npz"


def test_bach_doodle_ships_quantized_with_provenance():
    assert {"default", "bach-doodle"} <= set(bundled_models())
    folder = WEIGHTS_DIR / "bach-doodle"
    assert (folder / "group1-shard1of1").stat().st_size == 553_436  # uint8, not inflated to float32
    for name, digest in BUNDLED_SHA256["bach-doodle"].items():
        assert sha256_file(folder / name) == digest
    manifest = json.loads((folder / "weights_manifest.json").read_text())
    assert {w["quantization"]["dtype"] for w in manifest[0]["weights"]} == {"uint8"}
    info = json.loads((WEIGHTS_DIR / "bach-doodle.json").read_text())
    provenance = (folder / "PROVENANCE.md").read_text()
    for text in (info["recovered"] + info["not_identical_in"], provenance):
        assert "5 bias positions" in text or "5 sit in conv-bias" in text
    assert "Apache-2.0" in provenance and info["byte_identical_to_magenta"] is False and info["caveat"]
    bundled, reference = load_config(WEIGHTS_DIR / "bach-doodle.toml"), load_config("doodle-33x128")
    assert {**bundled.to_dict(), "name": ""} == {**reference.to_dict(), "name": ""}


def test_loading_bach_doodle_by_name_builds_the_33x128_model():
    model, config, info = load_bundled("bach-doodle")
    assert config.num_layers == 33 and config.num_filters == 128 and info["trained"] is True
    x = np.zeros((1, 32, 46, 8), np.float32)
    x[..., 4:] = 1.0  # everything to predict
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (1, 32, 46, 4)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, rtol=1e-4)


def test_an_altered_bundled_shard_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    shard = copy / "bach-doodle" / "group1-shard1of1"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 1
    shard.chmod(0o644)
    shard.write_bytes(bytes(data))
    monkeypatch.setattr(model_module, "WEIGHTS_DIR", copy)
    with pytest.raises(HarmonizerError, match=r"bundled model 'bach-doodle'.*group1-shard1of1 has sha256"):
        load_bundled("bach-doodle")
    with pytest.raises(HarmonizerError, match="no bundled model named 'nope'"):
        load_bundled("nope")


@pytest.mark.skipif(not DOODLE.is_dir(), reason="../shared/data/bach-doodle is not present")
def test_shared_doodle_weights_import_to_the_bundled_ones(tmp_path):
    """import-weights on ../shared/data/bach-doodle gives exactly the bundled weights (same sha256 files)."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app
    from harmonizer_deploy.music.model import bundled_weights

    for name, digest in BUNDLED_SHA256["bach-doodle"].items():
        assert sha256_file(DOODLE / name) == digest
    out = tmp_path / "doodle.npz"
    result = CliRunner().invoke(app, ["import-weights", str(DOODLE), "--config", "doodle-33x128", "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    with np.load(out) as imported:
        bundled = bundled_weights("bach-doodle", load_config(WEIGHTS_DIR / "bach-doodle.toml"))
        assert set(imported.files) == set(bundled)
        for k in bundled:
            np.testing.assert_array_equal(imported[k], bundled[k])


@pytest.mark.slow
@pytest.mark.skipif(not JSB.is_file(), reason="../shared/data/Jsb16thSeparated.npz is not present")
def test_bach_doodle_scores_below_0_6_nats_next_to_the_default_model():
    """evaluate --model bach-doodle --limit 8 on the test split (TensorFlow): < 0.6 nats/note, and the report
    sets the default model's figure on the same pieces and masks next to it, with the training-data caveat."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--dataset", str(JSB), "--split", "test", "--model",
                                      "bach-doodle", "--limit", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pieces"] == 8 and report["backend"] == "tensorflow"
    assert report["nll_per_note"] < 0.6
    assert report["baseline"]["model"] == "default" and report["baseline"]["pieces"] == 8
    assert report["nll_per_note"] < report["baseline"]["nll_per_note"]
    assert "not published" in report["model_info"]["caveat"]
