"""Atomic writes: all or nothing, with the permissions of any new file or directory."""

from __future__ import annotations

import os
import stat

import pytest

from harmonizer_deploy.core.artifacts import atomic_dir, atomic_file


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
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("boom")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt"]
