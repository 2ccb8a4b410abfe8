"""Targets and tuned records outside the installed package: the search path, TOML paths, typos, and `tune`'s
output, which must never land inside the package (site-packages after a pip install)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import harmonizer_deploy
from harmonizer_deploy.compiler.targets import available_targets, load_target, target_search_path, targets_dir
from harmonizer_deploy.core.errors import HarmonizerError

PACKAGE = Path(harmonizer_deploy.__file__).resolve().parent


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HARMONIZER_DEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARMONIZER_DEPLOY_TARGETS", raising=False)
    return tmp_path


def test_env_folders_and_the_user_folder_come_before_the_shipped_targets(user_dirs, monkeypatch):
    mine = user_dirs / "config" / "harmonizer-deploy" / "targets"
    mine.mkdir(parents=True)
    (mine / "cpu.toml").write_text((targets_dir() / "cpu.toml").read_text().replace(
        'description = "', 'description = "MINE '))
    extra = user_dirs / "extra"
    extra.mkdir()
    (extra / "cpu-mine.toml").write_text((targets_dir() / "cpu.toml").read_text().replace(
        'name = "cpu"', 'name = "cpu-mine"'))
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(extra))
    assert target_search_path() == [extra, mine, targets_dir()]
    # the variable adds a folder: the shipped targets are all still there
    assert {"cpu", "cuda", "cpu-mine"} <= set(available_targets())
    assert load_target("cuda").path == str(targets_dir() / "cuda.toml")
    assert load_target("cpu").description.startswith("MINE")
    assert load_target("cpu-mine").name == "cpu-mine"


def test_target_accepts_the_path_of_a_toml(user_dirs):
    path = user_dirs / "my-cpu.toml"
    path.write_text((targets_dir() / "cpu.toml").read_text().replace('name = "cpu"\n', ""))
    spec = load_target(str(path))
    assert spec.name == "my-cpu" and spec.path == str(path)
    with pytest.raises(HarmonizerError, match="target file not found"):
        load_target(str(user_dirs / "nope.toml"))


@pytest.mark.parametrize(("edit", "named"), [
    (lambda s: "bakend = \"tvm\"\n" + s, "bakend"),
    (lambda s: s.replace("[tolerance]", "[tolerance]\natoll = 1e-3"), "tolerance.atoll"),
    (lambda s: s + "\n[optoins]\nwinograd = true\n", "optoins"),
])
def test_unknown_keys_in_a_target_toml_are_named(user_dirs, edit, named):
    path = user_dirs / "typo.toml"
    path.write_text(edit((targets_dir() / "cpu.toml").read_text()))
    with pytest.raises(HarmonizerError, match=f"unknown key {named}"):
        load_target(str(path))


def test_every_shipped_target_has_only_known_keys():
    for name in ("cpu", "cuda", "vulkan", "webgpu", "wasm"):
        load_target(str(targets_dir() / f"{name}.toml"))


def test_tune_writes_to_the_user_cache_or_dash_o_never_into_the_package(user_dirs, monkeypatch, built):
    """tune's default output is the user cache; with -o it is that folder. MetaSchedule itself is faked (the
    [tune] extra may be absent): everything tune writes is checked to be outside the package directory."""
    from harmonizer_deploy.compiler import tuning

    spec = load_target("cpu")
    assert tuning.records_dir(spec).is_relative_to(user_dirs / "cache")
    assert not tuning.records_dir(spec).is_relative_to(PACKAGE)
    before = {p: p.stat().st_mtime_ns for p in PACKAGE.parent.rglob("*") if p.is_file()} if (
        PACKAGE.parent.name == "site-packages") else {p: p.stat().st_mtime_ns for p in targets_dir().rglob("*")}

    writes: list[Path] = []

    def fake_tune_tasks(*, tasks, task_weights, work_dir, max_trials_global, num_trials_per_iter, database, **_):
        writes.append(Path(work_dir))

    def fake_keep(tasks, path, target, *_):
        writes.append(Path(path))
        for name in (tuning.WORKLOADS, tuning.RECORDS):
            (path / name).write_text("")
        return {}

    monkeypatch.setattr(tuning, "require", lambda *a, **k: None)
    monkeypatch.setattr(tuning, "keep_winning_records", fake_keep)
    from tvm.s_tir import meta_schedule as ms

    monkeypatch.setattr(ms, "tune_tasks", fake_tune_tasks)
    monkeypatch.setattr(ms.relax_integration, "extracted_tasks_to_tune_contexts", lambda tasks, wd: ([], []))
    for output in (None, user_dirs / "mine"):
        result = tuning.tune(built / "model.onnx", "cpu", batch=1, time_steps=8, trials=1, output=output)
        out = Path(result["records"])
        assert out == (output or tuning.records_dir(spec))
        assert json.loads((out / tuning.META).read_text())["shapes"] == [[1, 8]]
    assert writes and all(not w.resolve().is_relative_to(PACKAGE) and not w.resolve().is_relative_to(targets_dir())
                          for w in writes)
    after = {p: p.stat().st_mtime_ns for p in before if p.exists()}
    assert after == before
    assert not any(p for p in targets_dir().rglob("*") if p not in before)


def test_compile_tuning_records_dir_is_used_or_refused(user_dirs, built, tmp_path):
    from harmonizer_deploy.compiler.tuning import META, RECORDS, find_records

    spec = load_target("cpu")
    records = tmp_path / "records"
    records.mkdir()
    (records / RECORDS).write_text("")
    (records / META).write_text(json.dumps({"shapes": [[1, 8]]}))
    found, _ = find_records(spec, (1, 8), records)
    assert found is not None and found.path == records
    with pytest.raises(HarmonizerError, match=r"--tuning-records .*cover \[batch, time\]"):
        find_records(spec, (1, 32), records)
    with pytest.raises(HarmonizerError, match="static shapes"):
        find_records(spec, None, records)
    with pytest.raises(HarmonizerError, match="no tuned records"):
        harmonizer_deploy.compile(built / "model.onnx", "cpu", tmp_path / "x", batch=1, time_steps=8,
                                  tuning_records=tmp_path / "none")
    assert os.environ["HARMONIZER_DEPLOY_CACHE"] == str(user_dirs / "cache")


def test_user_records_come_before_the_shipped_read_only_ones(user_dirs, monkeypatch):
    """compile looks in the user cache (where tune writes) first, then next to the target's TOML (shipped)."""
    import shutil

    from harmonizer_deploy.compiler.tuning import META, RECORDS, find_records, records_dir, shipped_records_dir

    private = user_dirs / "targets"
    shutil.copytree(targets_dir(), private, ignore=shutil.ignore_patterns("tuning"))
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(private))
    spec = load_target("cpu")
    shipped, user = shipped_records_dir(spec), records_dir(spec)
    assert shipped.is_relative_to(private) and user.is_relative_to(user_dirs / "cache")
    for path in (shipped, user):
        path.mkdir(parents=True)
        (path / RECORDS).write_text("")
        (path / META).write_text(json.dumps({"shapes": [[1, 8]]}))
    found, _ = find_records(spec, (1, 8))
    assert found is not None and found.path == user
    shutil.rmtree(user)
    found, _ = find_records(spec, (1, 8))
    assert found is not None and found.path == shipped
