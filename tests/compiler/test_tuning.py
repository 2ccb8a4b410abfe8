"""Static-shape artifacts and tuned records: found when they fit, refused clearly when they don't."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

import harmonizer_deploy as hd
from harmonizer_deploy.compiler.targets import load_target, targets_dir
from harmonizer_deploy.compiler.tuning import find_records
from harmonizer_deploy.core.errors import HarmonizerError


@pytest.fixture
def private_targets(tmp_path, monkeypatch):
    """A copy of targets/ without the shipped records, first on the search path, and a private user cache, so
    tuning records written by a test never land in the repository or the user's cache."""
    dest = tmp_path / "targets"
    shutil.copytree(targets_dir(), dest, ignore=shutil.ignore_patterns("tuning"))
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(dest))
    monkeypatch.setenv("HARMONIZER_DEPLOY_CACHE", str(tmp_path / "cache"))
    return dest


def test_records_need_static_shapes_and_matching_cpu(private_targets):
    spec = load_target("cpu")
    records, why = find_records(spec, None)
    assert records is None and "dynamic shapes" in why
    records, why = find_records(spec, (1, 32))
    assert records is None and "harmonizer-deploy tune" in why


def test_records_for_another_shape_are_not_used(private_targets):
    import json

    from harmonizer_deploy.compiler.tuning import META, RECORDS, records_dir

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
    from harmonizer_deploy.run.tvm import CompiledModel

    with pytest.raises(HarmonizerError, match=r"compiled for \[batch, time\] = \[1, 16\], got \[2, 16\]"):
        CompiledModel(tmp_path / "static").run(np.zeros((2, 16, 46, 8), np.float32))
    with pytest.raises(HarmonizerError, match="go together"):
        hd.compile(built / "model.onnx", "cpu", tmp_path / "x", batch=1)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("xgboost") is None, reason="needs the [tune] extra (xgboost)")
def test_tune_then_compile_uses_records(built, tmp_path, private_targets):
    from harmonizer_deploy.compiler.tuning import tune

    result = tune(built / "model.onnx", "cpu", batch=1, time_steps=8, trials=8, trials_per_round=8)
    assert result["tasks"] >= 3 and result["trials"] == 8
    decisions = result["records_vs_hand_schedules"]
    assert decisions and all(task.startswith("1x8/") for task in decisions)
    assert all(d["tuned_ms"] > 0 and d["hand_ms"] > 0 for d in decisions.values() if "hand_ms" in d)
    compiled = hd.compile(built / "model.onnx", "cpu", tmp_path / "tuned", batch=1, time_steps=8)
    assert compiled.manifest["tuning"]["used"] is (result["records_kept"] > 0)
    assert hd.verify(tmp_path / "tuned", "cpu", num_inputs=1).passed


def test_only_records_that_beat_the_hand_schedule_are_kept(built, tmp_path):
    """A tuned record replaces a hand schedule at compile time, so `tune` keeps it only where it measured faster
    (timer faked here: the direct convolutions "win", everything else hand-scheduled "loses"); kernels no hand
    schedule covers keep their record untimed."""
    import onnx
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from harmonizer_deploy.compiler.relax_import import import_onnx
    from harmonizer_deploy.compiler.tuning import RECORDS, WORKLOADS, fuse_for_tuning, keep_winning_records

    spec = load_target("cpu")
    target = spec.tvm_target()
    def shape_tasks(steps):
        mod, *_ = import_onnx(onnx.load(built / "model.onnx"), {"batch": 1, "time": steps})
        return ms.relax_integration.extract_tasks(fuse_for_tuning(mod, target, spec), target)

    tasks, earlier_shape = shape_tasks(8), shape_tasks(16)
    database = ms.database.JSONDatabase(str(tmp_path / WORKLOADS), str(tmp_path / RECORDS), allow_missing=True)
    for task in tasks + earlier_shape:  # a near-unscheduled record per task (outer loop split by 1) stands in
        func_mod = task.dispatched[0]
        sch = s_tir.Schedule(func_mod)
        sch.split(sch.get_loops(sch.get_child_blocks(sch.get_sblock("root"))[0])[0], [None, 1])
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, database.commit_workload(func_mod), [1e-3], target,
            ms.arg_info.ArgInfo.from_prim_func(func_mod["main"])))

    def fake_timer(kernel, _target):
        scheduled = "conv2d" in kernel.script() and "T.parallel" not in kernel.script()
        return 2.0 if not scheduled else 1.0  # the tuned (unscheduled) convolution "wins"

    decisions = keep_winning_records(tasks, tmp_path, target, timer=fake_timer)
    assert set(decisions) == {t.task_name for t in tasks}
    kept = {name for name, d in decisions.items() if d["kept"]}
    assert {name for name in decisions if "conv2d" in name} <= kept
    assert {name for name, d in decisions.items() if d["hand_schedule"] == "injective-parallel"}.isdisjoint(kept)
    assert {name for name, d in decisions.items() if d["hand_schedule"] == "default"} <= kept
    reloaded = ms.database.JSONDatabase(str(tmp_path / WORKLOADS), str(tmp_path / RECORDS), allow_missing=False)
    for task in tasks:
        found = reloaded.query_tuning_record(task.dispatched[0], target, "main") is not None
        assert found == (task.task_name in kept), task.task_name
    current = {task.dispatched[0].script() for task in tasks}
    other_shape_only = [t for t in earlier_shape if t.dispatched[0].script() not in current]
    assert any("conv2d" in t.task_name for t in other_shape_only)
    for task in other_shape_only:  # another shape's records (pruned when that shape was tuned) are left alone
        assert reloaded.query_tuning_record(task.dispatched[0], target, "main") is not None, task.task_name


def test_shipped_records_apply_to_the_bundled_model_on_their_cpu(bundled_onnx, tmp_path):
    """The records in targets/tuning/ are for one CPU model (znver5) and [1, 32]: on that CPU, compile finds them,
    applies the kept ones (the hand schedules keep the rest) and the artifact still verifies."""
    import json

    from harmonizer_deploy.compiler.tuning import META, shipped_records_dir

    spec = load_target("cpu")
    path = shipped_records_dir(spec)
    if not (path / META).is_file():
        pytest.skip(f"no shipped records for this CPU ({path.name}); they were tuned on cpu-znver5")
    meta = json.loads((path / META).read_text())
    onnx_path, _ = bundled_onnx
    compiled = hd.compile(onnx_path, "cpu", tmp_path / "b1", batch=1, time_steps=32)
    assert compiled.manifest["tuning"]["used"] is True
    schedules = list(compiled.manifest["schedules"]["functions"].values())
    assert schedules.count("tuned-record") >= 1 and "winograd-row-tasks" in schedules
    assert meta["records_kept"] >= 1
    assert hd.verify(tmp_path / "b1", "cpu", num_inputs=1).passed
