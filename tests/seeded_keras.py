"""Seeded Keras harmonizers for tests. A module of its own: `from conftest import …` is ambiguous once a test
folder has its own conftest.py (tests/web/ has one), so helpers shared by test files live here."""

from __future__ import annotations

from pathlib import Path


def save_seeded_keras(config, seed: int, path: Path) -> Path:
    """Build the model for `config`, give it seeded weights, save it as .keras at `path`."""
    from harmonizer_deploy.music.model import build_model, seeded_weights, set_weights

    model = build_model(config)
    set_weights(model, config, seeded_weights(config, seed=seed))
    model.save(path)
    return path
