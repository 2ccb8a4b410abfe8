"""The page runs the Bach Doodle model (`bach-doodle`, bundled): converted, compiled for wasm and webgpu with its
weights in the small uint8 form (`--web-weights uint8`), verified against onnxruntime in headless Chromium, and
harmonizing in the page, which downloads the uint8 weights and says how much it downloaded.

Slow (convert ~1 min, two compiles, webgpu on SwiftShader): `pytest -m slow tests/e2e/test_page_doodle.py`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from browser_env import browser_missing

pytestmark = pytest.mark.slow


needs_page = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def doodle_onnx(tmp_path_factory) -> Path:
    """The bundled bach-doodle model converted to ONNX (its sha256-checked TF.js weights, as shipped)."""
    from harmonizer_deploy import convert
    from harmonizer_deploy.music.model import bundled_models

    if "bach-doodle" not in bundled_models():
        pytest.skip("this install has no bundled bach-doodle model")
    path = tmp_path_factory.mktemp("doodle") / "model.onnx"
    convert("bach-doodle", path)
    return path


def _short_melody(path: Path) -> Path:
    """Two bars with a rest: short, because a Gibbs step on SwiftShader's software WebGPU takes minutes."""
    from harmonizer_deploy.music.midi import Note, write_melody_midi

    notes = [Note(67, 0, 4), Note(69, 4, 8), Note(71, 8, 12), Note(72, 14, 16), Note(71, 16, 24), Note(67, 24, 32)]
    return write_melody_midi(notes, path)


def _doodle_page(doodle_onnx: Path, target: str, tmp_path: Path, steps: int) -> None:
    from harmonizer_deploy import compile, verify
    from harmonizer_deploy.run.browser import run_page

    art = tmp_path / target
    compile(doodle_onnx, target, art, web_weights="uint8")
    manifest = json.loads((art / "manifest.json").read_text())
    params = manifest["web_params"]
    weights = sum(math.prod(p["shape"]) for p in json.loads((art / "params.json").read_text())["params"])
    assert params["encoding"] == "uint8" and params["bytes"] < 0.3 * 4 * weights  # ~1 byte a weight, not float32's 4
    report = verify(art, target, num_inputs=1, batch=1, time_steps=4)
    assert report.passed, report.outputs
    assert report.outputs[0]["argmax_agreement"] >= 0.9
    page = run_page(midi=_short_melody(tmp_path / "melody.mid"), artifacts={target: art}, backend=target, steps=steps,
                    timeout_s=900)
    assert page["backend"] == target and page["steps"] == steps
    assert page["weights_encoding"] == "uint8" and page["weight_bytes"] == params["bytes"]  # the small form
    assert f"weights {params['bytes'] / 1e6:.2f} MB as uint8" in page["status"]  # and the page says so
    sung = page["voice_names"].index(page["melody_voice"])
    for v, (voice, (low, high)) in enumerate(zip(page["voices"], page["ranges"], strict=True)):
        assert len(voice) == 32
        if v != sung:
            assert all(p is not None and low <= p <= high for p in voice), (v, voice)
    assert page["voices"][sung][12:14] == [None, None]  # the rest stays a rest


@needs_page
def test_page_runs_bach_doodle_on_wasm(doodle_onnx, tmp_path):
    _doodle_page(doodle_onnx, "wasm", tmp_path, steps=8)


@needs_page
def test_page_runs_bach_doodle_on_webgpu(doodle_onnx, tmp_path):
    _doodle_page(doodle_onnx, "webgpu", tmp_path, steps=1)


@needs_page
def test_page_and_cli_give_the_same_bach_doodle_chorale(doodle_onnx, tmp_path):
    """On the real model: the page on wasm (float32 weights) and `harmonize --backend tvm-cpu` from the same MIDI
    and seed agree on >= 99% of the notes (measured: 512 of 512 for Ode to Joy over 96 Gibbs steps)."""
    from harmonizer_deploy import compile
    from harmonizer_deploy.run.browser import run_page
    from harmonizer_deploy.run.jobs import harmonize_file

    build = tmp_path / "build"
    build.mkdir()
    for file in doodle_onnx.parent.iterdir():  # model.onnx and its sidecar
        if file.is_file():
            shutil.copy(file, build / file.name)
    compile(build / "model.onnx", "cpu", build / "cpu")
    compile(build / "model.onnx", "wasm", build / "wasm")
    melody = _short_melody(tmp_path / "melody.mid")
    cli = harmonize_file(melody, tmp_path / "cli.mid", backend="tvm-cpu", build_dir=build, seed=5, steps=24)
    page = run_page(midi=melody, artifacts={"wasm": build / "wasm"}, backend="wasm", seed=5, steps=24, timeout_s=900)
    assert page["melody_voice"] == cli["melody_voice"] and page["shift"] == cli["transposed_semitones"]
    cells = [(p, w) for v, pv in zip(page["voice_names"], page["voices"], strict=True)
             for p, w in zip(pv, cli["voices"][v], strict=True)]
    agree = sum(p == w for p, w in cells) / len(cells)
    assert agree >= 0.99, f"page and CLI agree on {agree:.1%} of {len(cells)} cells"
