"""Issue 15: compile replaces only its own artifact, and its temp files live and die next to the output."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from harmonizer_deploy.core.artifacts import OWNER_MARKER, owned_by_tool
from harmonizer_deploy.core.errors import HarmonizerError


def test_recompile_over_its_own_artifact_with_temp_files_next_to_it(build_copy, monkeypatch):
    from harmonizer_deploy.compiler import build

    seen: list[Path] = []
    real = build.get_exporter

    def spying(name):
        export = real(name)

        def wrapped(executable, spec, out_dir):
            seen.append(Path(tempfile.gettempdir()))  # where TVM's export_library puts lib0.o
            return export(executable, spec, out_dir)

        return wrapped

    monkeypatch.setattr(build, "get_exporter", spying)
    out = build_copy / "cpu"
    assert owned_by_tool(out)
    before = json.loads((out / OWNER_MARKER).read_text())["entries"]
    result = build.compile(build_copy / "model.onnx", "cpu", out, force=True)
    assert not result.cached
    assert len(seen) == 1 and seen[0].parent == build_copy and seen[0].name.startswith(".cpu.")
    assert not seen[0].exists()  # the scratch folder is gone with its lib0.o
    assert json.loads((out / OWNER_MARKER).read_text())["entries"] == before
    assert OWNER_MARKER not in result.manifest["artifacts"]
    assert sorted(p.name for p in build_copy.iterdir() if p.name.startswith(".cpu.")) == []  # no lock, no temp


def test_compile_refuses_a_folder_that_gained_a_user_file(build_copy):
    from harmonizer_deploy.compiler.build import compile

    (build_copy / "cpu" / "notes.txt").write_text("mine")
    with pytest.raises(HarmonizerError, match="not empty and was not written"):
        compile(build_copy / "model.onnx", "cpu", build_copy / "cpu", force=True)
    assert (build_copy / "cpu" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_killed_compile_leaves_only_its_own_temp_folders_and_the_next_run_removes_them(built, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from harmonizer_deploy.core.artifacts import clean_stale_temps

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "cpu"
    code = "import sys; from harmonizer_deploy.compiler.build import compile; compile(sys.argv[1], 'cpu', sys.argv[2])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(built / "model.onnx"), str(out)],
                            env={**os.environ, "PYTHONPATH": str(repo / "src")})
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(".cpu.*.work")) and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the compile finished before it could be killed")
    proc.send_signal(signal.SIGKILL)  # during export: scratch folder (TVM's lib0.o) and the half-made output
    proc.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left and all(name.startswith(f".cpu.{proc.pid}.") for name in left), left
    removed = clean_stale_temps(out)
    assert sorted(p.name for p in removed) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == []
