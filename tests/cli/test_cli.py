"""The CLI: each command's success path, and one clear line + non-zero exit for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from harmonizer_deploy.cli import app
from harmonizer_deploy.core.artifacts import sha256_file
from harmonizer_deploy.core.errors import EXIT_USER_ERROR, EXIT_VERIFY_FAILED

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str, code: int = EXIT_USER_ERROR):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich may wrap; the message itself is one logical line
    assert text.startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in text, result.output


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("convert", "compile", "verify", "bench", "doctor", "targets"):
        assert command in result.output


def test_convert_compile_verify_bench_json(tmp_path, small_keras, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("convert", str(small_keras), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["max_abs_err"] <= 1e-4
    result = run("compile", "--target", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cached"] is False
    result = run("verify", "--target", "cpu", "--json", "--num-inputs", "1", "--time", "8")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["target"] == "cpu" and report["passed"] is True
    assert report["outputs"][0]["name"] == "probs" and report["outputs"][0]["max_abs_err"] <= 1e-4
    result = run("bench", "--json", "--repeats", "1", "--warmup", "0", "--time", "8", "-o", "res")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    backends = {r["backend"] for r in report["rows"]} | {s["backend"] for s in report["skipped"]}
    assert backends == {"tensorflow", "onnxruntime", "openvino", "tvm-cpu"}  # openvino: a row, or skipped
    assert (tmp_path / "res" / "bench.png").is_file()


def test_verify_table_and_failure_exit_code(build_copy):
    result = run("verify", str(build_copy / "cpu"), "--num-inputs", "1", "--time", "8")
    assert result.exit_code == 0 and "PASSED" in result.output
    params = build_copy / "cpu" / "params.npz"
    with np.load(params) as data:
        arrays = {k: data[k] * (-1.0 if data[k].ndim == 4 and data[k].shape[0] == 4 else 1.0) for k in data.files}
    np.savez(params, **arrays)
    result = run("verify", str(build_copy / "cpu"), "--num-inputs", "1", "--time", "8")
    assert_one_line_error(result, "params.npz modified since compile")  # refused before loading (issue 15)
    manifest_path = build_copy / "cpu" / "manifest.json"  # as if compile had produced these params
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"]["params.npz"]["sha256"] = sha256_file(params)
    manifest_path.write_text(json.dumps(manifest))
    result = run("verify", str(build_copy / "cpu"), "--num-inputs", "1", "--time", "8")
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "FAILED" in result.output


def test_doctor_reports_packages_and_targets():
    result = run("doctor", "--json")
    assert result.exit_code == 0
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["apache-tvm-ffi"]["ok"] and "0.1.14.post1" in checks["apache-tvm-ffi"]["detail"]
    assert checks["target cpu"]["ok"]


# --- bad input: one line naming the problem and the fix, non-zero exit, nothing half-written ---------------


def test_missing_model_file(tmp_path):
    assert_one_line_error(run("convert", str(tmp_path / "nope.keras"), "-o", str(tmp_path / "m.onnx")),
                          "model not found", "pass a .keras file")
    assert not (tmp_path / "m.onnx").exists()


def test_corrupt_keras_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a zip archive")
    assert_one_line_error(run("convert", str(bad), "-o", str(tmp_path / "m.onnx")), "cannot load Keras model")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_and_corrupt_onnx(tmp_path):
    assert_one_line_error(run("compile", str(tmp_path / "none.onnx")), "ONNX model not found",
                          "harmonizer-deploy convert")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 10)
    assert_one_line_error(run("compile", str(garbage), "-o", str(tmp_path / "out")), "garbage.onnx")
    assert not (tmp_path / "out").exists()


def test_onnx_failing_the_checker(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["missing_input"], ["y"])], "g", [x], [y])
    path = tmp_path / "invalid.onnx"
    onnx.save(helper.make_model(graph), path)
    assert_one_line_error(run("compile", str(path), "-o", str(tmp_path / "out")), "fails the ONNX checker")
    assert not (tmp_path / "out").exists()


def test_unknown_target_lists_valid_ones(built):
    assert_one_line_error(run("compile", str(built / "model.onnx"), "--target", "tpu"), "unknown target 'tpu'",
                          "valid targets:", "cpu")
    assert_one_line_error(run("verify", str(built / "cpu"), "--target", "tpu"), "unknown target 'tpu'")


def test_wrong_input_shape_on_load_inputs(built, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_000=np.zeros((1, 8, 46, 4), np.float32))
    assert_one_line_error(run("verify", str(built / "cpu"), "--load-inputs", str(bad)), "has shape [1, 8, 46, 4]",
                          "expected [batch, time, 46, 8]")
    assert_one_line_error(run("verify", str(built / "cpu"), "--load-inputs", str(tmp_path / "none.npz")),
                          "inputs file not found")


def test_unwritable_output_dir(built, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_one_line_error(run("compile", str(built / "model.onnx"), "-o", str(blocker / "sub" / "cpu")),
                          "cannot create output directory")
    assert_one_line_error(run("convert", "-o", str(blocker / "m.onnx")), "cannot create output directory")


def test_missing_artifact(tmp_path):
    assert_one_line_error(run("verify", str(tmp_path), "--target", "cpu"), "no compiled artifact",
                          "harmonizer-deploy compile")


@pytest.mark.parametrize("args", [["compile", "does-not-exist.onnx"], ["verify", "--target", "nosuch"]])
def test_console_script_never_prints_a_traceback(args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harmonizer_deploy.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == EXIT_USER_ERROR
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    assert proc.stdout == ""


def test_import_weights_then_harmonize_and_evaluate(tmp_path):
    """Released-format weights → .keras via the CLI, then harmonize (JSON) and a clear error for bad MIDI."""
    from harmonizer_deploy.music.checkpoints import write_tfjs_manifest
    from harmonizer_deploy.music.harmonize import SAMPLE_MELODY
    from harmonizer_deploy.music.model import seeded_weights

    config = tmp_path / "mini.toml"
    config.write_text("num_layers = 5\nnum_filters = 8\nseparable = true\n")
    from harmonizer_deploy.music.config import load_config

    weights = seeded_weights(load_config(config), seed=2)
    write_tfjs_manifest(weights, tmp_path / "tfjs")
    keras_path = tmp_path / "mini.keras"
    result = run("import-weights", str(tmp_path / "tfjs"), "--config", str(config), "-o", str(keras_path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["variables"] == len(weights)
    out = tmp_path / "chorale.mid"
    result = run("harmonize", str(SAMPLE_MELODY), "-o", str(out), "--model", str(keras_path), "--steps", "3",
                 "--seed", "1", "--backend", "tensorflow", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backend"] == "tensorflow" and len(report["voices"]["bass"]) == 128 and out.is_file()
    bad = tmp_path / "bad.mid"
    bad.write_text("hello")
    assert_one_line_error(run("harmonize", str(bad), "-o", str(tmp_path / "x.mid")), "not a readable MIDI")
    assert not (tmp_path / "x.mid").exists()
    assert_one_line_error(run("import-weights", str(tmp_path / "tfjs"), "--config", "coconet-64x128", "-o",
                              str(tmp_path / "y.keras")), "model/conv0/weights", "missing")
