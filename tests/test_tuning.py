"""Static-shape artifacts and tuned records: found when they fit, refused clearly when they don't."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

import harmonizer_deploy as hd
from harmonizer_deploy.errors import HarmonizerError
from harmonizer_deploy.targets import load_target, targets_dir
from harmonizer_deploy.tuning import find_records


@pytest.fixture
def private_targets(tmp_path, monkeypatch):
    """A copy of targets/ so tuning records written by a test never land in the repository."""
    dest = tmp_path / "targets"
    shutil.copytree(targets_dir(), dest, ignore=shutil.ignore_patterns("tuning"))
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(dest))
    return dest


def test_records_need_static_shapes_and_matching_cpu(private_targets):
    spec = load_target("cpu")
    records, why = find_records(spec, None)
    assert records is None and "dynamic shapes" in why
    records, why = find_records(spec, (1, 32))
    assert records is None and "harmonizer-deploy tune" in why


def test_records_for_another_shape_are_not_used(private_targets):
    import json

    from harmonizer_deploy.tuning import META, RECORDS, records_dir

    spec = load_target("cpu")
    path = records_dir(spec)
    path.mkdir(parents=True)
    (path / RECORDS).write_text("")
    (path / META).write_text(json.dumps({"shapes": [[1, 8]]}))
    records, why = find_records(spec, (1, 32))
    assert records is None and "cover [batch, time] [[1, 8]], not [1, 32]" in why
    records, _ = find_records(spec, (1, 8))
    assert records is not None and records.path == path


def test_static_artifact_verifies_and_refuses_other_shapes(built, tmp_path, private_targets):
    result = hd.compile(built / "model.onnx", "cpu", tmp_path / "static", batch=1, time_steps=16)
    assert result.manifest["static_shape"] == [1, 16]
    assert result.manifest["inputs"][0]["shape"] == [1, 16, 46, 8]
    assert result.manifest["tuning"]["used"] is False
    report = hd.verify(tmp_path / "static", "cpu", num_inputs=1)
    assert report.passed and report.input_shapes == [[1, 16, 46, 8]]
    from harmonizer_deploy.runtime import CompiledModel

    with pytest.raises(HarmonizerError, match=r"compiled for \[batch, time\] = \[1, 16\], got \[2, 16\]"):
        CompiledModel(tmp_path / "static").run(np.zeros((2, 16, 46, 8), np.float32))
    with pytest.raises(HarmonizerError, match="go together"):
        hd.compile(built / "model.onnx", "cpu", tmp_path / "x", batch=1)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("xgboost") is None, reason="needs the [tune] extra (xgboost)")
def test_tune_then_compile_uses_records(built, tmp_path, private_targets):
    from harmonizer_deploy.tuning import tune

    result = tune(built / "model.onnx", "cpu", batch=1, time_steps=8, trials=8, trials_per_round=8)
    assert result["tasks"] >= 3 and result["trials"] == 8
    compiled = hd.compile(built / "model.onnx", "cpu", tmp_path / "tuned", batch=1, time_steps=8)
    assert compiled.manifest["tuning"]["used"] is True
    assert hd.verify(tmp_path / "tuned", "cpu", num_inputs=1).passed
