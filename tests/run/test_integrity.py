"""Issue 15 §3: an artifact whose files differ from what compile recorded is refused before anything is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harmonizer_deploy.core import manifest as manifest_module
from harmonizer_deploy.core.errors import EXIT_USER_ERROR, HarmonizerError
from harmonizer_deploy.core.manifest import integrity_problems, verified_manifest
from harmonizer_deploy.core.params import load_params

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "src" / "harmonizer_deploy" / "music" / "samples" / "two-bars.mid"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI in a child process: a damaged library that reached dlopen would kill it with a signal."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", "from harmonizer_deploy.cli.app import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_refused(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == EXIT_USER_ERROR, (proc.returncode, proc.stdout, proc.stderr)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "Traceback" not in text and "error:" in text, text
    text = text[text.index("error:"):]
    for fragment in fragments:
        assert fragment in text, text


def _corrupt_library(artifact: Path) -> None:
    lib = artifact / "model.so"
    data = bytearray(lib.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = b"\xff" * min(4096, len(data) - mid)  # code pages of garbage: SIGILL when run
    lib.write_bytes(bytes(data))


def _scale_params(artifact: Path, factor: float) -> None:
    params = artifact / "params.npz"
    with np.load(params) as data:
        arrays = {k: data[k] * factor for k in data.files}
    np.savez(params, **arrays)


@pytest.mark.slow
def test_verify_refuses_a_corrupted_library_before_loading_it(build_copy):
    _corrupt_library(build_copy / "cpu")
    proc = cli("verify", str(build_copy / "cpu"), "--num-inputs", "1", "--time", "8", cwd=build_copy)
    assert_refused(proc, "model.so modified since compile")


@pytest.mark.slow
def test_harmonize_and_bench_refuse_changed_params(build_copy, tmp_path):
    _scale_params(build_copy / "cpu", 1.5)
    proc = cli("harmonize", str(SAMPLE), "-o", str(tmp_path / "c.mid"), "--backend", "tvm-cpu", "--build-dir",
               str(build_copy), "--steps", "2", cwd=tmp_path)
    assert_refused(proc, "params.npz modified since compile")
    assert not (tmp_path / "c.mid").exists()
    proc = cli("bench", "--backend", "tvm-cpu", "--build-dir", str(build_copy), "--batch", "1", "--time", "8",
               "--repeats", "1", "--warmup", "0", "--harmonize-repeats", "0", "--out-dir", str(tmp_path / "res"),
               cwd=tmp_path)
    assert_refused(proc, "params.npz modified since compile")


def test_compiled_model_checks_hashes_before_load(build_copy, monkeypatch):
    from harmonizer_deploy.run import tvm as run_tvm

    _corrupt_library(build_copy / "cpu")
    loads = []
    monkeypatch.setattr("tvm.runtime.load_module", lambda path: loads.append(path))
    with pytest.raises(HarmonizerError, match=r"model\.so modified since compile"):
        run_tvm.CompiledModel(build_copy / "cpu")
    assert loads == []


def test_a_manifest_cannot_drop_the_library_from_its_hashes_or_point_outside(build_copy):
    artifact = build_copy / "cpu"
    path = artifact / "manifest.json"
    good = json.loads(path.read_text())
    dropped = {**good, "artifacts": {k: v for k, v in good["artifacts"].items() if k != "model.so"}}
    assert "model.so has no recorded hash" in integrity_problems(artifact, dropped)
    outside = {**good, "artifacts": {**good["artifacts"], "../model.onnx": {"sha256": "0" * 64}}}
    assert "'../model.onnx' has a malformed entry in manifest.json" in integrity_problems(artifact, outside)
    path.write_text(json.dumps(dropped))
    with pytest.raises(HarmonizerError, match=r"damaged: model\.so has no recorded hash"):
        verified_manifest(artifact)


def test_hashes_are_computed_once_per_file_version(tmp_path, monkeypatch):
    calls = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: calls.append(p) or real(p))
    f = tmp_path / "model.so"
    f.write_bytes(b"a" * 100)
    first = manifest_module.cached_sha256(f)
    assert manifest_module.cached_sha256(f) == first and len(calls) == 1
    f.write_bytes(b"b" * 101)  # new size (and mtime): hashed again
    assert manifest_module.cached_sha256(f) != first and len(calls) == 2


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated zip", b"", b"\x93NUMPY garbage", b"PK" + b"\0" * 100])
def test_a_corrupt_params_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "params.npz"
    path.write_bytes(content)
    with pytest.raises(HarmonizerError, match="cannot read parameters"):
        load_params(path)


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(HarmonizerError, match="not an artifact manifest"):
        verified_manifest(tmp_path)
