"""Coconet jobs on a backend chosen by name: the glue between `run` (what executes) and `music` (what is asked).

`music` stays free of backends: it takes any `run(x) -> probs` callable; these functions open the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.data import load_dataset
from harmonizer_deploy.music.encoding import VOICES
from harmonizer_deploy.music.evaluate import evaluate
from harmonizer_deploy.music.harmonize import backend_window, harmonize_notes, musical_problems
from harmonizer_deploy.music.midi import read_melody, write_chorale_midi, write_pianoroll_png
from harmonizer_deploy.music.sampling import GibbsSettings
from harmonizer_deploy.run.backends import open_harmonizer


def harmonize_file(melody_path: str | Path, out_path: str | Path, backend: str = "tensorflow",
                   build_dir: str | Path = "build", model: str | Path | None = None, seed: int = 0,
                   steps: int = 96, png: str | Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Read a melody, harmonize it on `backend` (see backends.open_backend), write MIDI (and a PNG)."""
    notes, bpm = read_melody(melody_path)
    runner = open_harmonizer(backend, build_dir, model, "harmonize")
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


def evaluate_dataset(dataset: str | Path, split: str = "test", backend: str = "tensorflow",
                     build_dir: str | Path = "build", model: str | Path | None = None, masks: int = 16,
                     seed: int = 0, batch: int = 8, limit: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Evaluate a model (through any backend) on a dataset split."""
    pieces = load_dataset(dataset, split)[:limit] if limit else load_dataset(dataset, split)
    runner = open_harmonizer(backend, build_dir, model, "evaluate")
    result = evaluate(runner.run, pieces, masks, seed, batch, progress)
    return {"dataset": str(dataset), "split": split, "backend": runner.name,
            "model": str(model) if model else "bundled:default", **result}
