"""Atomic writes: all or nothing, with the permissions of any new file or directory."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harmonizer_deploy.core import artifacts
from harmonizer_deploy.core.artifacts import (
    OWNER_MARKER,
    _lock_path,
    atomic_dir,
    atomic_file,
    check_output_dir,
    owned_by_tool,
)
from harmonizer_deploy.core.errors import HarmonizerError


def test_atomic_file_and_dir_honour_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_failure_leaves_previous_content(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "keep").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [OWNER_MARKER, "keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt"]


# --- issue 15 §1: never delete what the tool did not make ---------------------------------------------------------

def _snapshot(folder):
    """Every path under `folder` with its bytes (None for directories): a byte-for-byte picture."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def test_refuses_to_replace_a_folder_with_other_files(tmp_path):
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("code")
    (project / "model.onnx").write_bytes(b"onnx")
    before = _snapshot(project)
    with pytest.raises(HarmonizerError, match="not empty and was not written by harmonizer-deploy"), \
            atomic_dir(project) as tmp:
        (tmp / "model.so").write_text("new")
    assert _snapshot(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no temp folder left behind


def test_refuses_an_existing_regular_file_and_a_symlink(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(HarmonizerError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HarmonizerError, match="symbolic link"):
        check_output_dir(tmp_path / "link")
    assert (tmp_path / "file").read_text() == "mine"


def test_replaces_empty_and_own_output_but_not_once_the_user_adds_a_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with atomic_dir(out) as tmp:  # empty: fine
        (tmp / "a").write_text("1")
    assert json.loads((out / OWNER_MARKER).read_text())["entries"] == ["a"]
    with atomic_dir(out) as tmp:  # our own: fine
        (tmp / "a").write_text("2")
    assert (out / "a").read_text() == "2"
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(HarmonizerError, match="not empty"), atomic_dir(out) as tmp:
        (tmp / "a").write_text("3")
    assert (out / "notes.txt").read_text() == "the user's" and (out / "a").read_text() == "2"


def test_own_subfolder_added_later_is_still_ours(tmp_path):
    out = tmp_path / "cpu"
    with atomic_dir(out) as tmp:
        (tmp / "model.so").write_text("so")
    with atomic_dir(out / "bundle") as tmp:  # `bundle` writes into an artifact made earlier
        (tmp / "run.py").write_text("py")
    assert owned_by_tool(out)
    (out / "bundle" / "extra").write_text("user")
    assert not owned_by_tool(out)


def _legacy_artifact(folder):
    folder.mkdir()
    (folder / "model.so").write_text("so")
    (folder / "manifest.json").write_text(json.dumps({"cache_key": "k", "artifacts": {"model.so": {}}}))


def test_artifacts_from_before_the_marker_are_recognised_conservatively(tmp_path):
    _legacy_artifact(tmp_path / "old")
    assert owned_by_tool(tmp_path / "old")
    with atomic_dir(tmp_path / "old") as tmp:
        (tmp / "model.so").write_text("new")
    # a folder that merely holds a manifest among other things is not ours
    _legacy_artifact(tmp_path / "mixed")
    (tmp_path / "mixed" / "model.onnx").write_bytes(b"onnx")
    assert not owned_by_tool(tmp_path / "mixed")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps({"format_version": 1, "library": "model.so"}))
    (tmp_path / "bundle" / "run.py").write_text("py")
    assert owned_by_tool(tmp_path / "bundle")
    (tmp_path / "bundle" / "file.txt").write_text("keep")
    assert not owned_by_tool(tmp_path / "bundle")


def test_a_forged_marker_must_list_everything(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    (tmp_path / "d" / OWNER_MARKER).write_text(json.dumps({"tool": "harmonizer-deploy", "entries": []}))
    assert not owned_by_tool(tmp_path / "d")


# --- concurrency: a lock per output, an atomic swap, nothing left behind -----------------------------------------

def _write_version(out, value: str) -> None:
    with atomic_dir(out) as tmp:
        (tmp / "manifest.json").write_text(value)
        (tmp / "model.so").write_text(value * 1000)


def test_concurrent_writers_all_succeed_and_readers_never_see_it_missing(tmp_path):
    out = tmp_path / "cpu"
    _write_version(out, "0")
    stop = threading.Event()
    missing: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            if not os.path.isdir(out):
                missing.append("gone")

    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(15):
                _write_version(out, f"{i}-{j}")
        except BaseException as exc:
            errors.append(exc)

    watch = threading.Thread(target=reader)
    watch.start()
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    watch.join()
    assert errors == []
    assert missing == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu"]
    value = (out / "manifest.json").read_text()
    assert (out / "model.so").read_text() == value * 1000  # one writer's version, whole


def _writer_process(out: str, n: int) -> None:
    for j in range(n):
        _write_version(Path(out), f"{os.getpid()}-{j}")


def test_concurrent_writer_processes(tmp_path):
    out = tmp_path / "cpu"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer_process, args=(str(out), 10)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu"]


def test_fallback_without_renameat2_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    out = tmp_path / "cpu"
    for i in range(3):
        _write_version(out, str(i))
    assert (out / "manifest.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu"]


# --- temp files of killed runs ---------------------------------------------------------------------------------

def test_stale_temp_folders_of_dead_processes_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = [tmp_path / f".cpu.{pid}.abcd1234.tmp", tmp_path / f".cpu.{pid}.abcd1234.work",
             tmp_path / f".cpu.old-{pid}"]
    for folder in stale:
        folder.mkdir()
        (folder / "lib0.o").write_bytes(b"obj")
    live = tmp_path / f".cpu.{os.getpid()}.zzzz9999.tmp"  # this process: in progress, kept
    live.mkdir()
    legacy = tmp_path / ".cpu.k2j4h5g6.tmp"  # older versions: no PID; removed only empty and old
    legacy.mkdir()
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    user = tmp_path / ".cpu.notes"
    user.mkdir()
    half_file = tmp_path / f".cpu.{pid}.q1w2e3r4.tmp"  # a killed atomic_file's temp file
    half_file.write_bytes(b"half")
    user_file = tmp_path / ".cpu.1.keep.txt"
    user_file.write_text("mine")
    removed = artifacts.clean_stale_temps(tmp_path / "cpu")
    assert sorted(removed) == sorted([*stale, legacy, half_file])
    assert live.is_dir() and user.is_dir() and user_file.is_file()


def test_scratch_dir_holds_library_temp_files_and_goes_away(tmp_path):
    with artifacts.scratch_dir(tmp_path / "cpu") as work:
        path = Path(tempfile.mkdtemp()) / "lib0.o"
        path.write_bytes(b"obj")
        assert work in path.parents and os.environ["TMPDIR"] == str(work)
    assert not work.exists() and list(tmp_path.iterdir()) == []


def test_dot_output_in_an_empty_folder_fills_it_in_place(tmp_path, monkeypatch):
    here = tmp_path / "proj"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = here.stat().st_ino
    with atomic_dir(".") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert here.stat().st_ino == inode  # the same folder (the shell's cwd stays valid)
    assert sorted(p.name for p in here.iterdir()) == [OWNER_MARKER, "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
    (here / "mine.txt").write_text("x")
    with pytest.raises(HarmonizerError, match="not empty"), atomic_dir(".") as tmp:
        pass
    with pytest.raises(HarmonizerError, match="root"):
        check_output_dir("/")


def test_scratch_dir_removes_the_parents_it_created_when_left_empty(tmp_path):
    with pytest.raises(RuntimeError), artifacts.scratch_dir(tmp_path / "a" / "b" / "model.onnx"):
        raise RuntimeError("bad model")
    assert list(tmp_path.iterdir()) == []
    with artifacts.scratch_dir(tmp_path / "a" / "b" / "model.onnx"):
        (tmp_path / "a" / "b" / "model.onnx").write_text("onnx")
    assert (tmp_path / "a" / "b" / "model.onnx").is_file()


def test_a_symlink_in_place_of_the_lock_file_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    lock = _lock_path(tmp_path / "cpu")  # in the tool's cache, keyed by the output's path
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    with pytest.raises(HarmonizerError, match="lock file"), atomic_dir(tmp_path / "cpu") as tmp:
        (tmp / "a").write_text("1")
    lock.unlink()
    assert victim.read_text() == "keep" and not (tmp_path / "cpu").exists()
