"""The core install (no TensorFlow): commands build what they need on first use, and name the extra they lack.

TensorFlow, tf2onnx, keras and music21 are made unimportable in a subprocess (a meta-path finder that refuses
them), which is what a `pip install harmonizer-deploy` without extras looks like to the code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "src" / "harmonizer_deploy" / "music" / "samples" / "two-bars.mid"

# Runs each argv list through the CLI in one interpreter (TVM imports once) and prints one JSON line per command.
DRIVER = r'''
import json, sys

BLOCKED = ("tensorflow", "tf2onnx", "keras", "music21")
attempts = []

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from typer.testing import CliRunner
from harmonizer_deploy.cli import app

runner = CliRunner()
for args in json.loads(sys.argv[1]):
    res = runner.invoke(app, args)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
    print(json.dumps({"args": args, "exit": res.exit_code, "stdout": res.stdout, "stderr": res.stderr,
                      "attempts": sorted(set(attempts)), "loaded": loaded}))
    attempts.clear()
'''


def run_without_tensorflow(cwd: Path, *commands: list[str]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(commands))], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_compile_verify_harmonize_bench_an_onnx_model_without_tensorflow(tmp_path, built):
    """Only model.onnx is given: harmonize --backend tvm-cpu compiles build/cpu on first use (said on stderr),
    verify, harmonize --backend onnxruntime and bench run, and nothing imports TensorFlow."""
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(built / "model.onnx", build / "model.onnx")
    results = run_without_tensorflow(
        tmp_path,
        ["harmonize", str(SAMPLE), "-o", "tvm.mid", "--backend", "tvm-cpu", "--steps", "2", "--json"],
        ["verify", "--target", "cpu", "--num-inputs", "1", "--json"],
        ["harmonize", str(SAMPLE), "-o", "ort.mid", "--backend", "onnxruntime", "--steps", "2"],
        ["bench", "--repeats", "1", "--warmup", "0", "--harmonize-repeats", "0", "-o", "results", "--json"],
    )
    for r in results:
        assert r["exit"] == 0, r
        assert r["loaded"] == [], r  # an import would also have failed the command (the finder refuses it)
    first = results[0]
    assert "building build/cpu (first use" in first["stderr"] and "built build/cpu" in first["stderr"]
    assert json.loads(first["stdout"])["backend"] == "tvm-cpu"
    assert (build / "cpu" / "manifest.json").is_file() and (tmp_path / "tvm.mid").is_file()
    assert json.loads(results[1]["stdout"])["passed"] is True
    assert "building" not in results[1]["stderr"]  # already built: nothing rebuilt
    assert (tmp_path / "ort.mid").is_file()
    rows = json.loads(results[3]["stdout"])["rows"]
    assert {r["backend"] for r in rows} >= {"onnxruntime", "tvm-cpu"}
    assert "tensorflow" not in {r["backend"] for r in rows}


def test_commands_needing_an_extra_name_it_in_one_line(tmp_path, built):
    results = run_without_tensorflow(
        tmp_path,
        ["convert", "-o", "m.onnx"],
        ["harmonize", str(SAMPLE), "-o", "x.mid", "--backend", "onnxruntime", "--build-dir", "empty"],
        ["harmonize", str(SAMPLE), "-o", "x.mid", "--backend", "tensorflow"],
        ["train", "--steps", "1", "-o", "run"],
    )
    extras = ["convert", "convert", "convert", "train"]
    for r, extra in zip(results, extras, strict=True):
        assert r["exit"] == 2, r
        lines = r["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r
        assert f"pip install 'harmonizer-deploy[{extra}]'" in lines[0], r
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "run").exists()


def test_no_build_keeps_the_strict_error(tmp_path):
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    runner = CliRunner()
    for args in (["harmonize", str(SAMPLE), "-o", str(tmp_path / "x.mid"), "--backend", "tvm-cpu",
                  "--build-dir", str(tmp_path / "build"), "--no-build"],
                 ["bench", "--build-dir", str(tmp_path / "build"), "--no-build", "--backend", "onnxruntime"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "building" not in res.stderr and res.stderr.startswith("error:")
    assert not (tmp_path / "build").exists()


def test_an_existing_folder_without_a_manifest_is_not_replaced(tmp_path, built):
    """ensure never builds over a folder it did not make: the strict error names the folder."""
    from harmonizer_deploy.core.errors import HarmonizerError
    from harmonizer_deploy.run.ensure import ensure_backend
    from harmonizer_deploy.run.jobs import harmonize_file

    build = tmp_path / "build"
    (build / "cpu").mkdir(parents=True)
    (build / "cpu" / "mine.txt").write_text("user data")
    shutil.copy(built / "model.onnx", build / "model.onnx")
    ensure_backend("tvm-cpu", build)
    assert (build / "cpu" / "mine.txt").read_text() == "user data"
    with pytest.raises(HarmonizerError, match="no compiled artifact"):
        harmonize_file(SAMPLE, tmp_path / "x.mid", "tvm-cpu", build, steps=1)


@pytest.mark.slow
def test_fresh_folder_harmonize_bench_verify_build_what_they_need(tmp_path):
    """The issue's acceptance, with the bundled model: no build/ at all, then harmonize --backend tvm-cpu, bench and
    verify --target cpu succeed, converting and compiling once (the later commands reuse it)."""
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harmonizer_deploy.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)

    first = cli("harmonize", str(SAMPLE), "-o", "out.mid", "--backend", "tvm-cpu", "--steps", "4")
    assert first.returncode == 0, first.stderr
    assert "built build/model.onnx (first use" in first.stderr and "built build/cpu (first use" in first.stderr
    bench = cli("bench", "--repeats", "1", "--warmup", "0", "--harmonize-repeats", "0", "-o", "results")
    assert bench.returncode == 0, bench.stderr
    verify = cli("verify", "--target", "cpu", "--num-inputs", "1")
    assert verify.returncode == 0, verify.stderr
    assert "building" not in bench.stderr + verify.stderr
    assert (tmp_path / "out.mid").is_file() and (tmp_path / "results" / "bench.json").is_file()
