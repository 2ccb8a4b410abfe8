"""The page treats a melody exactly as `harmonizer-deploy harmonize` does.

Node-only (fast): the JS random source (static/random.js) gives the very numbers of music/random.py; the page's
MIDI reading (static/midi.js on @tonejs/midi) gives the CLI's notes; the page's sampler (static/sampler.js) gives
the CLI's chorale note for note on a deterministic fake network. Headless Chromium: the page on the wasm artifact
vs `harmonize --backend tvm-cpu` on the same MIDI file and seed agree on >= 99% of the notes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from browser_env import browser_missing
from harmonizer_deploy.core.errors import HarmonizerError

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "src" / "harmonizer_deploy" / "web" / "static"


def _tonejs_midi() -> Path | None:
    from harmonizer_deploy.web.jsdeps import tonejs_midi_dir

    try:
        return tonejs_midi_dir(install=False) / "Midi.js"
    except HarmonizerError:
        return None


needs_node = pytest.mark.skipif(shutil.which("node") is None,
                                reason="Node.js is not installed (apt-get install nodejs)")
needs_tonejs = pytest.mark.skipif(_tonejs_midi() is None,
                                  reason="@tonejs/midi is not installed: run scripts/install-web-deps.sh")

# The JS side of the fake network below, and a driver that runs one job per JSON line.
DRIVER = """
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
const require = createRequire(import.meta.url);
const [jobFile, midiLib] = process.argv.slice(2);
if (midiLib) globalThis.Midi = require(midiLib).Midi;
const random = await import(STATIC + "/random.js");
const sampler = await import(STATIC + "/sampler.js");
const midi = await import(STATIC + "/midi.js");
// deterministic fake network: w = 1 + ((7t + 13p + 5v + k_t) mod 17), k_t = the number of ones in input row t,
// normalized in float64 then rounded to float32 (what the Python twin computes)
const fake = async (x, shape) => {
  const [, T, P, C] = shape, V = C / 2, out = new Float32Array(T * P * V);
  for (let t = 0; t < T; t++) {
    let k = 0;
    for (let i = t * P * C; i < (t + 1) * P * C; i++) k += x[i];
    for (let v = 0; v < V; v++) {
      let sum = 0;
      const w = (p) => 1 + ((7 * t + 13 * p + 5 * v + k) % 17);
      for (let p = 0; p < P; p++) sum += w(p);
      for (let p = 0; p < P; p++) out[(t * P + p) * V + v] = Math.fround(w(p) / sum);
    }
  }
  return { data: out, shape: [1, T, P, V] };
};
const results = [];
for (const job of JSON.parse(readFileSync(jobFile, "utf8"))) {
  try {
    if (job.kind === "uniform") {
      results.push(job.cells.map(([seed, step, t, v, s]) => random.uniform(seed, step, t, v, s)));
    } else if (job.kind === "read") {
      results.push(midi.readMidiMelody(new Uint8Array(readFileSync(job.path)).buffer, job.path));
    } else if (job.kind === "write") {
      const bytes = midi.midiFromVoices(job.voices, ["Soprano", "Alto", "Tenor", "Bass"], job.bpm);
      (await import("node:fs")).writeFileSync(job.path, bytes);
      results.push({ bytes: bytes.length });
    } else if (job.kind === "harmonize") {
      const r = await sampler.harmonizeNotes(fake, job.notes, { seed: job.seed, melodyVoice: job.voice,
        schedule: { ...sampler.SCHEDULE, steps: job.steps }, window: job.window });
      results.push(r);
    }
  } catch (e) {
    results.push({ error: String(e.message || e) });
  }
}
console.log(JSON.stringify(results));
"""


def _fake_network(x: np.ndarray) -> np.ndarray:
    """The Python twin of the driver's fake network (x [1, T, 46, 8] → probs [1, T, 46, 4])."""
    _, t, p, c = x.shape
    v = c // 2
    k = x[0].reshape(t, -1).sum(axis=1).astype(np.int64)
    tt, pp, vv = np.meshgrid(np.arange(t), np.arange(p), np.arange(v), indexing="ij")
    w = (1 + ((7 * tt + 13 * pp + 5 * vv + k[:, None, None]) % 17)).astype(np.float64)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)[None]


def _run_node(tmp_path: Path, jobs: list[dict]) -> list:
    script = tmp_path / "driver.mjs"
    script.write_text(f"const STATIC = {json.dumps(STATIC.as_uri())};\n" + DRIVER)
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    lib = _tonejs_midi()
    proc = subprocess.run(["node", str(script), str(job_file), str(lib) if lib else ""], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_node
def test_js_and_python_uniforms_are_identical(tmp_path):
    from harmonizer_deploy.music.random import uniform, uniform_grid

    cells = [[seed, step, t, v, s] for seed in (0, 1, 7, -1, -123456789, 2**32 + 5, 2**52 + 3)
             for step in (0, 1, 95, 4097) for t in (0, 1, 31, 4095) for v in range(4) for s in (0, 1)]
    js = _run_node(tmp_path, [{"kind": "uniform", "cells": cells}])[0]
    py = [float(uniform(*cell)) for cell in cells]
    assert js == py  # bit for bit, not approximately
    grid = uniform_grid(0, 0, 4096, 4, 1)
    assert grid.shape == (4096, 4) and grid.min() >= 0.0 and grid.max() < 1.0
    # a uniform source: deciles each hold ~10% of 16384 draws (binomial sd ~0.23%), draws differ across streams
    counts = np.histogram(grid, bins=10, range=(0, 1))[0] / grid.size
    assert np.all(np.abs(counts - 0.1) < 0.012), counts
    assert np.mean(uniform_grid(0, 0, 4096, 4, 0) == grid) < 1e-3
    assert np.mean(uniform_grid(1, 0, 4096, 4, 1) == grid) < 1e-3


def _write_midi(path: Path, notes: list[tuple[int, int, int]], tpb: int = 480, signature: tuple[int, int] = (4, 4),
                channel: int = 0) -> Path:
    """notes as (pitch, start tick, end tick)."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=tpb)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("time_signature", numerator=signature[0], denominator=signature[1], time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0))
    events = sorted([(s, 1, p) for p, s, _ in notes] + [(e, 0, p) for p, _, e in notes])
    now = 0
    for tick, on, pitch in events:
        track.append(mido.Message("note_on" if on else "note_off", note=pitch, velocity=80 if on else 0,
                                  channel=channel, time=tick - now))
        now = tick
    mid.tracks.append(track)
    mid.save(str(path))
    return path


MELODIES = {
    # rests kept (not held), a pickup bar's worth of silence trimmed, 16th grid
    "rests": ([(64, 1920, 2400), (66, 2400, 2880), (67, 3360, 3840), (69, 3840, 4800), (67, 5280, 5760)], 480, (4, 4)),
    # off the grid (triplets), halves on the grid edge (round half to even), a 3/4 bar
    "triplets": ([(72, 0, 160), (74, 160, 320), (76, 320, 480), (77, 480, 720), (79, 780, 960)], 480, (3, 4)),
    # a bass-register tune: `auto` gives it to the bass, whole-melody shifts elsewhere
    "low": ([(43, 0, 240), (45, 240, 480), (47, 480, 720), (48, 720, 1440), (50, 1440, 1920)], 240, (4, 4)),
}


@needs_node
@needs_tonejs
def test_page_reads_midi_like_the_cli(tmp_path):
    from harmonizer_deploy.music.midi import read_midi_score

    paths = {name: _write_midi(tmp_path / f"{name}.mid", notes, tpb, sig) for name, (notes, tpb, sig)
             in MELODIES.items()}
    paths["drums"] = _write_midi(tmp_path / "drums.mid", [(36, 0, 480)], channel=9)
    paths["chord"] = _write_midi(tmp_path / "chord.mid", [(60, 0, 480), (64, 0, 480)])
    names = list(paths)
    js = _run_node(tmp_path, [{"kind": "read", "path": str(paths[n])} for n in names])
    for name, got in zip(names, js, strict=True):
        try:
            score = read_midi_score(paths[name])
        except HarmonizerError as exc:
            assert "error" in got, (name, got)
            assert exc.problem.split(":")[0].split(" ")[-1] in got["error"] or "polyphonic" in got["error"], got
            continue
        want = [{"pitch": n.pitch, "start": n.start, "end": n.end} for n in score.notes]
        assert got.get("notes") == want, name
        assert got["stepsPerBar"] == score.steps_per_bar
        assert got["bpm"] == pytest.approx(score.bpm, rel=1e-4)
    assert "off the 16th-note grid" in js[names.index("triplets")]["warnings"][0]
    assert js[names.index("rests")]["notes"][2]["start"] - js[names.index("rests")]["notes"][1]["end"] == 4  # a rest
    assert "percussion" in js[names.index("drums")]["error"]


@needs_node
@pytest.mark.parametrize(("melody", "seed", "voice", "window"), [
    ("rests", 0, "auto", None), ("triplets", 5, "soprano", None), ("low", 2**40 + 1, "auto", None),
    ("low", 9, "soprano", None), ("rests", -3, "alto", None),
    ("rests", 4, "auto", 16), ("low", 1, "auto", 48),  # fixed-window artifacts: overlapping windows; padded tune
])
def test_page_sampler_gives_the_cli_chorale(tmp_path, melody, seed, voice, window):
    """Same notes, seed and network: harmonizeNotes (JS) == harmonize_notes (Python), every step of every voice,
    with the same voice choice and transposition (and the same windows for a fixed-time artifact)."""
    from harmonizer_deploy.music.harmonize import harmonize_notes
    from harmonizer_deploy.music.midi import Note, read_midi_score
    from harmonizer_deploy.music.sampling import GibbsSettings

    notes_ticks, tpb, sig = MELODIES[melody]
    notes = read_midi_score(_write_midi(tmp_path / "m.mid", notes_ticks, tpb, sig)).notes
    if melody == "rests":  # lengthen past 64 steps so the draws cover several bars
        notes = notes + [Note(n.pitch, n.start + 24, n.end + 24) for n in notes]
    steps = 12
    want = harmonize_notes(notes, _fake_network, seed=seed, settings=GibbsSettings(steps=steps, window=window),
                           melody_voice=voice)
    got = _run_node(tmp_path, [{"kind": "harmonize", "seed": seed, "voice": voice, "steps": steps, "window": window,
                                "notes": [{"pitch": n.pitch, "start": n.start, "end": n.end} for n in notes]}])[0]
    assert "error" not in got, got
    assert got["melodyVoice"] == want.melody_voice and got["shift"] == want.shift
    chorale = [[None if np.isnan(p) else int(p) for p in want.chorale[:, v]] for v in range(4)]
    assert got["chorale"] == chorale
    assert None in got["chorale"][got["melodyVoice"]] or melody != "rests"  # rests stay rests
    if melody == "low":  # a bass tune: sung by the bass (auto), or moved two octaves up whole for the soprano
        assert (got["melodyVoice"], got["shift"]) == ((3, 0) if voice == "auto" else (0, 24))


@needs_node
def test_page_sampler_refuses_what_the_cli_refuses(tmp_path):
    wide = [{"pitch": 40, "start": 0, "end": 4}, {"pitch": 80, "start": 4, "end": 8}]
    got = _run_node(tmp_path, [{"kind": "harmonize", "seed": 0, "voice": "soprano", "steps": 2, "notes": wide}])[0]
    assert "spans 40 semitones" in got["error"]


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_page_and_cli_give_the_same_chorale(web_wasm, tmp_path):
    """The acceptance test: one MIDI file (rests, off-grid notes) and seed, the page on the wasm artifact in
    headless Chromium vs `harmonize --backend tvm-cpu`: same voice choice and transposition, >= 99% of notes
    agree (the two differ only where float error moves a probability across a draw)."""
    from harmonizer_deploy.run.browser import run_page
    from harmonizer_deploy.run.jobs import harmonize_file

    notes = [(67, 0, 480), (69, 480, 720), (71, 720, 960), (72, 1200, 1920), (71, 1920, 2400), (69, 2400, 2600),
             (67, 2600, 3360), (66, 3360, 3840), (67, 3840, 4800), (74, 5280, 6240), (72, 6240, 7680)]
    melody = _write_midi(tmp_path / "melody.mid", notes)
    seed, steps = 7, 24
    cli = harmonize_file(melody, tmp_path / "cli.mid", backend="tvm-cpu", build_dir=web_wasm, seed=seed, steps=steps)
    page = run_page(midi=melody, artifacts={"wasm": web_wasm / "wasm"}, backend="wasm", seed=seed, steps=steps,
                    timeout_s=600)
    assert page["backend"] == "wasm" and page["seed"] == seed and page["steps"] == steps
    assert page["melody_voice"] == cli["melody_voice"] and -page["shift"] == -cli["transposed_semitones"]
    want = [cli["voices"][v] for v in page["voice_names"]]
    assert len(page["voices"]) == 4 and all(len(p) == len(w) for p, w in zip(page["voices"], want, strict=True))
    cells = [(p, w) for pv, wv in zip(page["voices"], want, strict=True) for p, w in zip(pv, wv, strict=True)]
    agree = sum(p == w for p, w in cells) / len(cells)
    assert agree >= 0.99, f"page and CLI agree on {agree:.1%} of {len(cells)} cells"
    assert None in page["voices"][page["voice_names"].index(page["melody_voice"])]  # the rest stayed a rest
    assert any("2 note(s) were off the 16th-note grid" in w for w in page["warnings"])  # as the CLI warns


@needs_tonejs
def test_server_serves_the_pinned_midi_library(tmp_path):
    """The page loads @tonejs/midi from the npm cache as /vendor/Midi.js (the version jsdeps pins)."""
    import urllib.request

    from harmonizer_deploy.web.jsdeps import TONEJS_MIDI_VERSION, tonejs_midi_dir
    from harmonizer_deploy.web.server import WebServer

    assert tonejs_midi_dir(install=False).parent.name == "midi"
    package = json.loads((tonejs_midi_dir(install=False).parent / "package.json").read_text())
    assert package["version"] == TONEJS_MIDI_VERSION
    bundle = tmp_path / "tvmjs.js"
    bundle.write_text("// js")
    with WebServer(bundle, {}) as server:
        with urllib.request.urlopen(f"{server.url}/vendor/Midi.js", timeout=10) as r:
            body = r.read()
            assert r.headers["Content-Type"] == "text/javascript"
        with urllib.request.urlopen(f"{server.url}/", timeout=10) as r:
            page = r.read().decode()
    assert body == (tonejs_midi_dir(install=False) / "Midi.js").read_bytes()
    assert '<script src="/vendor/Midi.js">' in page and 'id="stop"' in page


@pytest.mark.slow  # two Chromium runs, one over 512 steps: ~70 s on the loaded 2-core machine
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_page_warns_about_a_long_melody_and_refuses_a_bad_seed(web_wasm, tmp_path):
    """A melody longer than the page handles is harmonized up to PAGE_MAX_STEPS with a warning giving its
    length; ?seed must be an integer (the CLI's --seed), said in one message."""
    from harmonizer_deploy.run.browser import run_page

    long_tune = [(60 + (i % 8), i * 480, (i + 1) * 480) for i in range(150)]  # 150 quarter notes = 600 steps
    midi = _write_midi(tmp_path / "long.mid", long_tune)
    report = run_page(midi=midi, artifacts={"wasm": web_wasm / "wasm"}, backend="wasm", steps=1, timeout_s=600)
    assert any("600 16th-note steps long" in w and "first 512" in w for w in report["warnings"]), report["warnings"]
    assert all(len(v) == 512 for v in report["voices"]) and report["seed"] == 0
    with pytest.raises(HarmonizerError, match=r"\?seed=1\.5 is not an integer"):
        run_page(midi=midi, artifacts={"wasm": web_wasm / "wasm"}, backend="wasm", steps=1, seed="1.5",  # type: ignore[arg-type]
                 timeout_s=300)


@needs_node
@needs_tonejs
def test_page_download_is_the_chorale_as_the_cli_reads_it(tmp_path):
    """The page's Download MIDI (midiFromVoices on @tonejs/midi): one track per voice, named, its own channel,
    the notes and tempo back as written."""
    import mido

    from harmonizer_deploy.music.midi import read_midi_score

    voices = [[{"pitch": 72, "start": 0, "end": 4}, {"pitch": 74, "start": 6, "end": 8}],
              [{"pitch": 65, "start": 0, "end": 8}],
              [{"pitch": 57, "start": 0, "end": 2}, {"pitch": 59, "start": 2, "end": 8}],
              [{"pitch": 41, "start": 0, "end": 8}]]
    path = tmp_path / "chorale.mid"
    _run_node(tmp_path, [{"kind": "write", "path": str(path), "voices": voices, "bpm": 72}])
    score = read_midi_score(path, keep_voices=True)
    assert [name for name, _ in score.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert [[{"pitch": n.pitch, "start": n.start, "end": n.end} for n in notes] for _, notes in score.tracks] == voices
    assert score.bpm == pytest.approx(72, rel=1e-4)
    channels = [{m.channel for m in track if m.type == "note_on"} for track in mido.MidiFile(str(path)).tracks[1:]]
    assert channels == [{0}, {1}, {2}, {3}]


def test_page_and_cli_default_to_the_same_voice_leading():
    """The page's default drawing is the CLI's: otherwise the same melody and seed give different chorales."""
    import re

    from harmonizer_deploy.music.sampling import GibbsSettings

    source = (Path(__file__).resolve().parents[2] / "src/harmonizer_deploy/web/static/sampler.js").read_text()
    page_default = re.search(r'export const DEFAULT_VOICE_LEADING = "(\w+)"', source)
    assert page_default and page_default.group(1) == GibbsSettings().voice_leading
