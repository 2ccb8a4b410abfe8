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
from harmonizer_deploy.music.evaluate import evaluate
from harmonizer_deploy.music.harmonize import backend_window, harmonize_notes, musical_problems
from harmonizer_deploy.music.midi import read_melody, write_chorale_midi, write_pianoroll_png
from harmonizer_deploy.music.model import BUNDLED_MODEL, bundled_models, bundled_paths
from harmonizer_deploy.music.sampling import GibbsSettings
from harmonizer_deploy.run.backends import open_backend


def harmonize_file(melody_path: str | Path, out_path: str | Path, backend: str = "tensorflow",
                   build_dir: str | Path = "build", model: str | Path | None = None, seed: int = 0,
                   steps: int = 96, png: str | Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Read a melody, harmonize it on `backend` (see backends.open_backend), write MIDI (and a PNG)."""
    notes, bpm = read_melody(melody_path)
    runner = open_backend(backend, build_dir, model=model)
    settings = GibbsSettings(steps=steps, window=backend_window(runner))
    result = harmonize_notes(notes, runner.run, seed, settings, progress)
    problems = musical_problems(result.melody + result.shift, result.model_frame)
    if problems:
        raise HarmonizerError(f"harmonization failed its musical checks: {'; '.join(problems)}",
                              "report this with the melody file, backend and seed")
    write_chorale_midi(result.voices(notes), out_path, bpm)
    if png:
        write_pianoroll_png(result.chorale, png, title=f"{Path(melody_path).name} · {backend} · seed {seed}")
    return {
        "melody": str(melody_path), "output": str(out_path), "png": str(png) if png else None,
        "backend": runner.name, "seed": seed, "gibbs_steps": steps, "time_steps": int(result.melody.shape[0]),
        "transposed_semitones": result.shift, "seconds": round(result.seconds, 2),
        "voices": {v: [None if np.isnan(p) else int(p) for p in result.chorale[:, i]] for i, v in enumerate(VOICES)},
    }


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
    runner = open_backend(backend, build_dir, model=model)
    result = evaluate(runner.run, pieces, masks, seed, batch, progress)
    report = {"dataset": str(dataset), "split": split, "backend": runner.name,
              "model": str(model) if model else f"bundled:{BUNDLED_MODEL}", **result}
    info = _bundled_info(model)
    if info:
        report["model_info"] = info
    if compare_with is not None:
        base = evaluate(open_backend("tensorflow", build_dir, model=compare_with).run, pieces, masks, seed, batch)
        report["baseline"] = {"model": compare_with, "backend": "tensorflow", "same_pieces_and_masks": True,
                              **{k: base[k] for k in ("nll_per_note", "stderr", "pieces", "notes", "seconds")},
                              **({"model_info": _bundled_info(compare_with)} if _bundled_info(compare_with) else {})}
    return report
