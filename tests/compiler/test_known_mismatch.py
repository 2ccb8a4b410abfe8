"""compile consults the coverage data: a node in a known-mismatch class is refused in one line (exit 2) unless
--allow-known-mismatch; once the pack fixes the class, the same model compiles and matches onnxruntime."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

pytest.importorskip("tvm")

from harmonizer_deploy.cli.app import app
from harmonizer_deploy.frontend import coverage_check as cc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontend"))
from test_coverage_check import reduce_model, resize_model

runner = CliRunner()


def _compile(model: onnx.ModelProto, tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path, out = tmp_path / "model.onnx", tmp_path / "cpu"
    onnx.save(model, path)
    result = runner.invoke(app, ["compile", str(path), "--target", "cpu", "-o", str(out), *extra])
    return result.exit_code, result.output, out


def _refusal(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output  # one line, no traceback
    assert lines[0].startswith("error: ")
    return lines[0]


def _matches_onnxruntime(model: onnx.ModelProto, artifact: Path, x: np.ndarray) -> None:
    from harmonizer_deploy.core.onnxruntime import ort_session
    from harmonizer_deploy.run.tvm import CompiledModel

    expected = ort_session(model.SerializeToString()).run(None, {"x": x})[0]
    got = CompiledModel(artifact).run(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


RESIZE_CASE = "test_resize_downsample_scales_cubic"  # cubic, half_pixel, downsampling by scales
SHIPPED = cc.TABLE_PATH


def _table_with(tmp_path: Path, name: str, key: str, entry: dict) -> Path:
    table = copy.deepcopy(cc.load_table(SHIPPED))
    table["classes"][key] = entry
    path = tmp_path / name
    path.write_text(json.dumps(table))
    return path


def test_resize_in_a_known_bad_mode_is_refused_then_allowed_and_fixed_by_the_pack(tmp_path, monkeypatch):
    from harmonizer_deploy.core.onnxruntime import ort_session
    from harmonizer_deploy.coverage import tracker as cov
    from harmonizer_deploy.frontend import pack

    model = resize_model(ctm="half_pixel")  # the class of RESIZE_CASE
    key = cc.node_class(model.graph.node[0], cc.graph_facts(model))
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4)).astype(np.float32)

    # Without the pack's Resize converter, TVM's own import computes other numbers: the class is really bad.
    without = {k: v for k, v in pack.CONVERTERS.items() if k != ("", "Resize")}
    got = cov.run_tvm_model(model, [x], lambda stage: None, without)[0]
    assert not np.allclose(got, ort_session(model.SerializeToString()).run(None, {"x": x})[0], atol=1e-3)

    # the table as coverage.json had it before the pack fix: compile refuses in one line
    before = _table_with(tmp_path, "before.json", key, {"cases": 1, "pass": 0, "versions": [19], "mismatch": [
        {"case": RESIZE_CASE, "detail": "output 0: max abs diff 0.841 (rtol=0.001, atol=1e-07)"}]})
    monkeypatch.setattr(cc, "TABLE_PATH", before)
    code, output, out = _compile(model, tmp_path / "a")
    assert code == 2
    line = _refusal(output)
    assert "node 'shrink' (Resize)" in line and "coordinate_transformation_mode=half_pixel" in line
    assert RESIZE_CASE in line
    assert not out.exists()

    code, output, out = _compile(model, tmp_path / "a", "--allow-known-mismatch")
    assert code == 0, output
    check = json.loads((out / "manifest.json").read_text())["coverage_check"]
    assert check["allowed_known_mismatch"] is True
    assert check["known_mismatch"][0]["case"] == RESIZE_CASE
    assert "known-mismatch class" in output  # the warning that it was built anyway

    # With the pack fix the class's node case passes (tests/frontend/test_pack_image.py runs it under TVM + pack);
    # the table a coverage re-run derives then has the class passing, and the same model compiles and verifies.
    after = _table_with(tmp_path, "after.json", key, {"cases": 1, "pass": 1, "versions": [19]})
    monkeypatch.setattr(cc, "TABLE_PATH", after)
    code, output, out = _compile(model, tmp_path / "b")
    assert code == 0, output
    check = json.loads((out / "manifest.json").read_text())["coverage_check"]
    assert check["known_mismatch"] == [] and check["tested"] == 1
    _matches_onnxruntime(model, out, x)


def test_reduce_sum_over_a_zero_size_dim_refused_before_the_fix_and_right_after(tmp_path, monkeypatch):
    model = reduce_model([2, 0, 4], [1])
    key = cc.node_class(model.graph.node[0], cc.graph_facts(model))
    # the table as coverage.json had it before the pack fix (the node case mismatched: max abs diff 1.42e+25)
    before = copy.deepcopy(cc.load_table())
    before["classes"][key] = {"cases": 1, "pass": 0, "versions": [13], "mismatch": [
        {"case": "test_reduce_sum_empty_set", "detail": "output 0: max abs diff 1.42e+25 (rtol=0.001, atol=1e-07)"}]}
    table = tmp_path / "before.json"
    table.write_text(json.dumps(before))
    monkeypatch.setattr(cc, "TABLE_PATH", table)
    code, output, _ = _compile(model, tmp_path / "a")
    assert code == 2
    line = _refusal(output)
    assert "node 'total' (ReduceSum)" in line and "reduces_zero_size_dim=1" in line
    assert "test_reduce_sum_empty_set" in line

    monkeypatch.undo()  # the shipped table: the pack fix passes the case, so compile builds it
    code, output, out = _compile(model, tmp_path / "b")
    assert code == 0, output
    check = json.loads((out / "manifest.json").read_text())["coverage_check"]
    assert check["known_mismatch"] == [] and check["tested"] == 1
    _matches_onnxruntime(model, out, np.zeros((2, 0, 4), np.float32))


def test_untested_class_compiles_with_a_warning(tmp_path):
    model = reduce_model([2, 3], [1], op="ReduceMax", dtype=onnx.TensorProto.DOUBLE, opset=18)
    code, output, out = _compile(model, tmp_path)
    assert code == 0, output
    assert "warning: op class ReduceMax/float64" in output
    check = json.loads((out / "manifest.json").read_text())["coverage_check"]
    assert check["untested"] == [cc.node_class(model.graph.node[0], cc.graph_facts(model))]
