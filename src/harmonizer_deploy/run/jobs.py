"""Coconet jobs on a backend chosen by name: the glue between `run` (what executes) and `music` (what is asked).

`music` stays free of backends: it takes any `run(x) -> probs` callable; these functions open the backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.data import load_dataset
from harmonizer_deploy.music.encoding import VOICES
from harmonizer_deploy.music.evaluate import evaluate, musical_evaluation
from harmonizer_deploy.music.harmonize import (
    VOICE_CHOICES,
    assign_voices,
    backend_window,
    harmonize_notes,
    harmonize_voices,
    musical_problems,
)
from harmonizer_deploy.music.midi import (
    melody_pitches,
    read_score,
    write_chorale_midi,
    write_chorale_musicxml,
    write_pianoroll_png,
)
from harmonizer_deploy.music.model import BUNDLED_MODEL, bundled_models, bundled_paths
from harmonizer_deploy.music.sampling import GibbsSettings
from harmonizer_deploy.music.voice_leading import VOICE_LEADING_MODES
from harmonizer_deploy.run.backends import open_backend, open_harmonizer, source_of_onnx

MUSICXML_OUT = (".musicxml", ".xml")


def check_voice_leading(mode: str) -> None:
    """A clear user error for an unknown --voice-leading mode, before any work."""
    if mode not in VOICE_LEADING_MODES:
        raise HarmonizerError(f"unknown voice-leading mode {mode!r}", f"use one of {', '.join(VOICE_LEADING_MODES)}")


def harmonize_file(melody_path: str | Path, out_path: str | Path, backend: str = "tensorflow",
                   build_dir: str | Path = "build", model: str | Path | None = None, seed: int = 0,
                   steps: int = 96, png: str | Path | None = None,
                   progress: Callable[[int, int], None] | None = None, melody_voice: str = "auto",
                   keep_voices: bool = False, voice_leading: str = "strict") -> dict:
    """Read a melody (or, with `keep_voices`, 1-3 given voices), harmonize it on `backend` (see
    backends.open_backend), write MIDI or MusicXML (by `out_path`'s suffix) with the input's time/key
    signatures and tempo map, and optionally a PNG. `voice_leading`: "strict" (default) or "off", see
    sampling.GibbsSettings."""
    out_path = Path(out_path)
    if out_path.suffix.lower() == ".mxl":
        raise HarmonizerError(f"cannot write compressed MusicXML {out_path}", "use -o NAME.musicxml or NAME.mid")
    if melody_voice not in VOICE_CHOICES:
        raise HarmonizerError(f"unknown melody voice {melody_voice!r}", f"use one of {', '.join(VOICE_CHOICES)}")
    check_voice_leading(voice_leading)
    score = read_score(melody_path, keep_voices=keep_voices)
    runner = open_harmonizer(backend, build_dir, model, "harmonize")
    settings = GibbsSettings(steps=steps, window=backend_window(runner), voice_leading=voice_leading)
    if keep_voices:
        if melody_voice != "auto":
            raise HarmonizerError("--melody-voice and --keep-voices both say which voice a line is",
                                  "with --keep-voices, name the tracks Soprano/Alto/Tenor/Bass instead")
        t = max(n.end for _, notes in score.tracks for n in notes)
        voices = assign_voices([(name, melody_pitches(notes, t)) for name, notes in score.tracks])
        given = {v: notes for v, (_, notes) in zip(voices, score.tracks, strict=True)}
        result = harmonize_voices(given, runner.run, seed, settings, progress)
    else:
        given = None
        result = harmonize_notes(score.notes, runner.run, seed, settings, progress, melody_voice=melody_voice)
        given = {result.melody_voice: score.notes}
    lines = {v: result.chorale[:, v] for v in result.fixed if v != result.melody_voice}
    problems = musical_problems(result.melody, result.chorale, result.melody_voice, lines)
    if problems:
        raise HarmonizerError(f"harmonization failed its musical checks: {'; '.join(problems)}",
                              "report this with the melody file, backend and seed")
    parts = result.voices(given, score.steps_per_bar)
    if out_path.suffix.lower() in MUSICXML_OUT:
        write_chorale_musicxml(parts, out_path, score.bpm, score.meta)
    else:
        write_chorale_midi(parts, out_path, score.bpm, score.meta)
    if png:
        write_pianoroll_png(result.chorale, png, title=f"{Path(melody_path).name} · {backend} · seed {seed}")
    return {
        "melody": str(melody_path), "output": str(out_path), "png": str(png) if png else None,
        "backend": runner.name, "model": model_label(model, backend, build_dir), "seed": seed,
        "gibbs_steps": steps, "voice_leading": voice_leading, "time_steps": int(result.melody.shape[0]),
        "melody_voice": VOICES[result.melody_voice], "given_voices": [VOICES[v] for v in result.fixed],
        "transposed_semitones": result.shift, "seconds": round(result.seconds, 2),
        "time_signatures": [f"{dict(m.attrs)['numerator']}/{dict(m.attrs)['denominator']}" for m in score.meta
                            if m.kind == "time_signature"],
        "voices": {v: [None if np.isnan(p) else int(p) for p in result.chorale[:, i]] for i, v in enumerate(VOICES)},
    }


def model_label(model: str | Path | None, backend: str, build_dir: str | Path) -> str:
    """What a job ran: the named model, else the bundled one (tensorflow) or whatever build_dir/model.onnx was
    converted from (every other backend runs that file, whichever model is bundled today)."""
    if model is not None:
        return str(model)
    if backend == "tensorflow":
        return f"bundled:{BUNDLED_MODEL}"
    source = source_of_onnx(Path(build_dir) / "model.onnx")
    if source is None:
        return f"{Path(build_dir) / 'model.onnx'} (source unknown)"
    return f"bundled:{source}" if source in bundled_models() else source


def _bundled_info(model: str | Path | None) -> dict:
    """Provenance of a bundled model named `model` (label, caveat), or {} for files and unknown names."""
    name = str(model) if model is not None else None
    if name is None or Path(name).exists() or name not in bundled_models():
        return {}
    _, _, info_path = bundled_paths(name)
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return {k: info[k] for k in ("label", "caveat", "trained") if k in info}


def evaluate_dataset(dataset: str | Path, split: str = "test", backend: str = "tensorflow",
                     build_dir: str | Path = "build", model: str | Path | None = None, masks: int = 16,
                     seed: int = 0, batch: int = 8, limit: int | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     compare_with: str | None = None) -> dict:
    """Evaluate a model (through any backend) on a dataset split.

    `compare_with` names a bundled model scored on the same pieces with the same masks (TensorFlow), so two
    models' NLLs are a paired comparison rather than two noisy estimates; its figures land under "baseline".
    """
    pieces = load_dataset(dataset, split)[:limit] if limit else load_dataset(dataset, split)
    if compare_with is not None and compare_with not in bundled_models():
        raise HarmonizerError(f"no bundled model named {compare_with!r} to compare with",
                              f"bundled models: {', '.join(bundled_models())}, or none")
    runner = open_harmonizer(backend, build_dir, model, "evaluate")
    result = evaluate(runner.run, pieces, masks, seed, batch, progress)
    report = {"dataset": str(dataset), "split": split, "backend": runner.name,
              "model": model_label(model, backend, build_dir), **result}
    info = _bundled_info(model)
    if info:
        report["model_info"] = info
    if compare_with is not None:
        base = evaluate(open_backend("tensorflow", build_dir, model=compare_with).run, pieces, masks, seed, batch)
        report["baseline"] = {"model": compare_with, "backend": "tensorflow", "same_pieces_and_masks": True,
                              **{k: base[k] for k in ("nll_per_note", "stderr", "pieces", "notes", "seconds")},
                              **({"model_info": _bundled_info(compare_with)} if _bundled_info(compare_with) else {})}
    return report


def evaluate_musical_dataset(dataset: str | Path, split: str = "test", backend: str = "tensorflow",
                             build_dir: str | Path = "build", model: str | Path | None = None, steps: int = 32,
                             seed: int = 0, limit: int | None = None,
                             progress: Callable[[int, int], None] | None = None, voice_leading: str = "strict",
                             score_masks: int = 4) -> dict:
    """Harmonize the split's soprano lines with a model and compare musical figures with Bach's chorales."""
    check_voice_leading(voice_leading)
    pieces = load_dataset(dataset, split)[:limit] if limit else load_dataset(dataset, split)
    runner = open_harmonizer(backend, build_dir, model, "evaluate --musical")
    result = musical_evaluation(runner.run, pieces, steps, seed, progress, voice_leading, score_masks)
    report = {"dataset": str(dataset), "split": split, "backend": runner.name,
              "model": model_label(model, backend, build_dir), **result}
    info = _bundled_info(model)
    if info:
        report["model_info"] = info
    return report
