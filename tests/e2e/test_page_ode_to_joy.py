"""The page harmonizes Ode to Joy (64 sixteenth steps, 96 Gibbs steps) on wasm, timed by the page itself in headless
Chromium, with a screenshot. Each model is built as `make target=wasm` builds it (converted, compiled for wasm with
uint8 weights).

Two models: `default`, the model issue 18 measured (59 s then) and whose budget it sets (6 s), and the Bach
Doodle's (BUNDLED_MODEL, the page's default since), ~5x the work per Gibbs step: its time is measured and printed,
and held to its own budget, which is what one wasm thread on this machine class allows (~12.5 s of CPU in the
network alone, bench/page_cpu.mjs).

Slow (convert ~1-2 min, compile ~30 s, the page run itself): `pytest -m slow tests/e2e/test_page_ode_to_joy.py -s`
(`-s` shows the measured time and where the screenshot went).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from browser_env import browser_missing

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Issue 18's acceptance: "The page harmonizes Ode to Joy (64 steps, 96 Gibbs steps) in at most 6 s on wasm."
# A wall-clock budget depends on the machine and on what else runs on it, which is why this is a slow test,
# not part of the default run; it is meant for a quiet machine.
PAGE_BUDGET_S = {"default": 6.0, "bach-doodle": 20.0}
GIBBS_STEPS = 96
ODE_TO_JOY = 0  # index in web/static/melodies.json

needs_page = pytest.mark.skipif(browser_missing(page=True) is not None, reason=str(browser_missing(page=True)))


@pytest.fixture(scope="module", params=sorted(PAGE_BUDGET_S))
def page_build(request, tmp_path_factory) -> tuple[str, Path]:
    """A build folder holding a wasm artifact of a bundled model, made as `make target=wasm` makes it: the model
    converted to ONNX, compiled for wasm with uint8 weights (the page's small download)."""
    from harmonizer_deploy import compile, convert
    from harmonizer_deploy.music.model import bundled_models

    if request.param not in bundled_models():
        pytest.skip(f"this install has no bundled {request.param} model")
    build = tmp_path_factory.mktemp(f"page-build-{request.param}")
    convert(request.param, build / "model.onnx")
    compile(build / "model.onnx", "wasm", build / "wasm", web_weights="uint8")
    return request.param, build


def _ode_to_joy() -> list[int | None]:
    data = json.loads((REPO / "src/harmonizer_deploy/web/static/melodies.json").read_text())
    return [p for p, d in data["melodies"][ODE_TO_JOY]["notes"] for _ in range(d)]


@needs_page
def test_page_harmonizes_ode_to_joy_on_wasm_within_budget(page_build, tmp_path):
    from harmonizer_deploy.run.browser import run_page

    model, build = page_build
    budget = PAGE_BUDGET_S[model]
    shot = tmp_path / f"page-ode-to-joy-wasm-{model}.png"
    report = run_page(build, melody=ODE_TO_JOY, backend="wasm", seed=0, screenshot=shot, timeout_s=900)
    kept = Path(os.environ.get("HARMONIZER_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
    kept.mkdir(parents=True, exist_ok=True)
    kept_shot = kept / shot.name
    shutil.copyfile(shot, kept_shot)
    seconds, model_seconds = report["seconds"], report["model_seconds"]
    print(f"page ({model}): Ode to Joy, {report['steps']} Gibbs steps on {report['backend']} in {seconds:.2f} s "
          f"({1000 * seconds / report['steps']:.0f} ms per step, {1000 * model_seconds / report['steps']:.0f} ms "
          f"of it in the network; budget {budget:.0f} s; load average {os.getloadavg()[0]:.1f}); "
          f"screenshot {kept_shot}")

    # the page finished, on wasm, with the full schedule and the page's default (uint8) weights
    assert report["ok"] and report["backend"] == "wasm" and report["steps"] == GIBBS_STEPS
    assert report["weights_encoding"] == "uint8"
    # a valid four-voice chorale: the melody as given (rests kept), every other voice singing at every step
    # inside its range
    melody = _ode_to_joy()
    assert len(melody) == 64 and report["melody"] == melody
    voices, ranges = report["voices"], report["ranges"]
    sung = report["voice_names"].index(report["melody_voice"])
    assert len(voices) == 4 and all(len(v) == len(melody) for v in voices)
    assert voices[sung] == melody
    for v, (voice, (low, high)) in enumerate(zip(voices, ranges, strict=True)):
        if v != sung:
            assert all(p is not None and low <= p <= high for p in voice), (v, voice, low, high)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 < model_seconds <= seconds
    assert seconds <= budget, (
        f"the page took {seconds:.2f} s for Ode to Joy on wasm ({1000 * model_seconds / report['steps']:.0f} ms "
        f"per step in the network, {1000 * (seconds - model_seconds) / report['steps']:.0f} ms in the page's JS), "
        f"more than the {budget:.0f} s budget for {model} (load average {os.getloadavg()[0]:.1f})")
