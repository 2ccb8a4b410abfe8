"""A build folder runs the model it was converted from: naming another one is refused, not silently ignored."""

from __future__ import annotations

import inspect
import shutil

import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.run.ensure import check_build_model, ensure_backend
from harmonizer_deploy.run.jobs import model_label


@pytest.fixture()
def build(tmp_path, built):
    folder = tmp_path / "build"
    folder.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(built / name, folder / name)
    shutil.copytree(built / "cpu", folder / "cpu")
    return folder


def test_another_model_than_the_build_folders_is_refused_in_one_line(build):
    with pytest.raises(HarmonizerError) as caught:
        ensure_backend("tvm-cpu", build, model="bach-doodle")
    assert "was converted from" in caught.value.problem and "not bach-doodle" in caught.value.problem
    assert "--build-dir" in caught.value.fix
    with pytest.raises(HarmonizerError, match="was converted from"):
        ensure_backend("onnxruntime", build, model="default")


def test_the_build_folders_own_model_and_no_model_pass(build, small_keras):
    ensure_backend("tvm-cpu", build, model=str(small_keras))
    ensure_backend("tvm-cpu", build)
    check_build_model(build, None)
    ensure_backend("tensorflow", build, model="bach-doodle")  # tensorflow runs the named model itself


def test_jobs_report_the_model_that_ran(build, small_keras):
    assert model_label(None, "tvm-cpu", build) == str(small_keras) or model_label(None, "tvm-cpu", build).endswith(
        small_keras.name)
    assert model_label(None, "tensorflow", build).startswith("bundled:")
    assert model_label("default", "onnxruntime", build) == "default"


def test_harmonize_runs_tvm_cpu_unless_told_otherwise():
    from harmonizer_deploy.cli.music import harmonize
    from harmonizer_deploy.music.model import BUNDLED_MODEL

    default = inspect.signature(harmonize).parameters["backend"].default
    assert default == "tvm-cpu"
    assert BUNDLED_MODEL == "bach-doodle"
