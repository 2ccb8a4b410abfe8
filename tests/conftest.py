"""Shared fixtures: one small model converted and compiled once per session, so tests stay fast."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from seeded_keras import save_seeded_keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_config():
    from harmonizer_deploy.music.config import ModelConfig

    return ModelConfig(name="tiny", num_layers=6, num_filters=8)


@pytest.fixture(scope="session")
def small_keras(tmp_path_factory, small_config):
    """A tiny Coconet saved as .keras (seeded weights), fast to convert and compile."""
    return save_seeded_keras(small_config, 1, tmp_path_factory.mktemp("keras") / "tiny.keras")


@pytest.fixture(scope="session")
def bundled_onnx(tmp_path_factory):
    """The small model this project trained, bundled as `default` (16 layers x 64 filters), converted to ONNX."""
    from harmonizer_deploy import convert

    path = tmp_path_factory.mktemp("bundled") / "model.onnx"
    result = convert("default", path)
    return path, result


@pytest.fixture(scope="session")
def built(tmp_path_factory, small_keras):
    """build/ with model.onnx (+ sidecar) and a compiled cpu artifact for the tiny model."""
    from harmonizer_deploy import compile, convert

    build = tmp_path_factory.mktemp("build")
    convert(small_keras, build / "model.onnx")
    compile(build / "model.onnx", "cpu", build / "cpu")
    return build


@pytest.fixture
def build_copy(tmp_path, built):
    """A private copy of the session build dir, for tests that modify artifacts."""
    dest = tmp_path / "build"
    shutil.copytree(built, dest)
    # the manifest records the absolute ONNX path; point it at the copy
    import json

    manifest_path = dest / "cpu" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["path"] = str(dest / "model.onnx")
    manifest_path.write_text(json.dumps(manifest))
    return dest
