"""The op coverage tracker: real ONNX node cases end to end through the worker machinery, a crashing and a
hanging worker, the journal, static baking, the comparison rules and the report CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harmonizer_deploy.coverage import report as rep
from harmonizer_deploy.coverage import tracker as cov

REPO = Path(__file__).resolve().parents[2]
FAKES = "coverage_fake_runners"
REAL_CASES = ["test_relu", "test_celu", "test_reversesequence_time"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """Three real node cases through every variant, plus a crashing and a hanging variant, on two workers."""
    journal = tmp_path_factory.mktemp("cov") / "journal.jsonl"
    variants = (*cov.VARIANTS, "crash", "hang")
    runners = {"crash": f"{FAKES}:crash", "hang": f"{FAKES}:hang"}
    cases = [c for c in cov.collect_cases(REAL_CASES) if c.name in REAL_CASES]
    assert sorted(c.name for c in cases) == sorted(REAL_CASES)
    seen = []
    result = cov.run_coverage(
        cases=cases,
        jobs=2,
        timeout_s=15,
        journal=journal,
        variants=variants,
        runners=runners,
        progress=lambda i, n, task, cat: seen.append((task.case.name, task.variant, cat)),
    )
    return result, journal, cases, variants, runners, seen


def test_real_cases_land_in_the_expected_categories(real_run):
    result, *_ = real_run
    relu, celu, revseq = (result.cases[n] for n in REAL_CASES)
    assert all(relu[v]["status"] == cov.PASS for v in cov.VARIANTS)
    # Celu has no TVM converter; the pack adds one.
    assert celu["tvm"]["status"] == cov.UNSUPPORTED
    assert "Celu" in celu["tvm"]["detail"]
    assert celu["tvm_pack"]["status"] == cov.PASS
    # ReverseSequence needs its sequence_lens baked in (static) and the pack's converter.
    assert revseq["tvm_static"]["status"] == cov.UNSUPPORTED
    assert revseq["tvm_pack"]["status"] == cov.PASS
    # test_relu has a single float input: nothing to bake, so "static" reuses the as-is result.
    assert relu["tvm_static"]["same_as"] == "tvm"


def test_a_crashing_worker_costs_one_case_not_the_run(real_run):
    result, *_ = real_run
    for name in REAL_CASES:
        crash = result.cases[name]["crash"]
        assert crash["status"] == cov.COMPILE_ERROR  # the stage it last reported
        assert "worker died during compile" in crash["detail"]


def test_a_hanging_worker_is_killed_at_the_timeout(real_run):
    result, *_ = real_run
    hang = result.cases["test_relu"]["hang"]
    assert hang["status"] == cov.TIMEOUT
    assert "during run" in hang["detail"]
    # the replacement worker carries on with the other cases
    assert result.cases["test_celu"]["hang"]["status"] == cov.PASS


def test_the_journal_makes_a_rerun_resume(real_run):
    result, journal, cases, variants, runners, seen = real_run
    assert len(seen) == result.meta["tasks_run"] > 0
    again = cov.run_coverage(cases=cases, jobs=1, timeout_s=20, journal=journal, variants=variants, runners=runners)
    assert again.meta["tasks_run"] == 0
    assert {k: {v: e[v]["status"] for v in variants} for k, e in again.cases.items()} == {
        k: {v: e[v]["status"] for v in variants} for k, e in result.cases.items()
    }


def test_a_journal_line_cut_short_is_ignored(tmp_path):
    fps = cov.fingerprints()
    good = {"case": "a", "variant": "tvm", "status": "pass", "detail": "", "fingerprint": fps["tvm"]}
    stale = {**good, "case": "b", "fingerprint": "v0 something else"}
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(stale) + "\n" + '{"case": "c", "vari')
    assert list(cov.read_journal(path, fps)) == ["a\ttvm"]


def test_unknown_variant_is_a_one_line_error():
    from harmonizer_deploy.core.errors import HarmonizerError

    with pytest.raises(HarmonizerError, match="unknown coverage variant"):
        cov.run_coverage(cases=[], variants=("nope",))


def test_fake_runner_passes_without_tvm(tmp_path):
    case = cov.Case("test_fake", "Fake", onnx.ModelProto(), [], [])
    result = cov.run_coverage(cases=[case], jobs=1, variants=("ok",), runners={"ok": f"{FAKES}:passes"})
    assert result.cases["test_fake"]["ok"]["status"] == cov.PASS


# ------------------------------------------------------------------------------------------- pieces


def _two_input_model() -> onnx.ModelProto:
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_make_static_bakes_inputs_after_the_first():
    model = _two_input_model()
    x, shape = np.ones((2, 3), np.float32), np.array([6], np.int64)
    static, inputs, baked = cov.make_static(model, [x, shape])
    assert baked == ["shape"]
    assert [i.name for i in static.graph.input] == ["x"]
    assert [t.name for t in static.graph.initializer] == ["shape"]
    assert len(inputs) == 1 and inputs[0] is x
    assert [i.name for i in model.graph.input] == ["x", "shape"]  # the original is untouched


def test_compare_outputs_rules():
    a = np.array([1.0, 2.0], np.float32)
    assert cov.compare_outputs([a], [a.copy()], 1e-3, 1e-7) is None
    assert "dtype" in cov.compare_outputs([a.astype(np.float64)], [a], 1e-3, 1e-7)
    assert "shape" in cov.compare_outputs([a[:1]], [a], 1e-3, 1e-7)
    assert "output tensors" in cov.compare_outputs([a, a], [a], 1e-3, 1e-7)
    assert "NaN" in cov.compare_outputs([np.array([np.nan, 2.0], np.float32)], [a], 1e-3, 1e-7)
    assert "max abs diff" in cov.compare_outputs([a + 1], [a], 1e-3, 1e-7)
    nan = np.array([np.nan], np.float32)
    assert cov.compare_outputs([nan], [nan.copy()], 1e-3, 1e-7) is None


def test_case_op_prefers_ops_in_the_graph():
    model = _two_input_model()
    assert cov.case_op("test_reshape_negative_dim", model, ["Reshape", "Relu"]) == "Reshape"
    assert cov.case_op("test_relu_expanded", model, ["Reshape", "Relu"]) == "Relu"


# ------------------------------------------------------------------------------------------- report


def _report(statuses: dict[str, dict[str, str]]) -> dict:
    cases = {
        name: {"op": "Op", "expanded": False, **{v: {"status": s, "detail": ""} for v, s in cols.items()}}
        for name, cols in statuses.items()
    }
    return rep.build_report(cov.CoverageResult(cases, {"cases": len(cases)}))


ALL_PASS = dict.fromkeys(cov.VARIANTS, cov.PASS)


def test_regressions_lists_pass_to_fail_only():
    base = _report({"a": ALL_PASS, "b": {**ALL_PASS, "tvm": cov.MISMATCH}})
    now = _report({"a": {**ALL_PASS, "tvm_pack": cov.RUNTIME_ERROR}, "b": ALL_PASS})
    found = rep.regressions(base, now)
    assert len(found) == 1 and found[0].startswith("a [tvm_pack]: pass -> runtime error")


def test_pack_breaks_and_summary():
    report = _report({"a": ALL_PASS, "b": {**ALL_PASS, "tvm_pack": cov.MISMATCH}})
    assert rep.pack_breaks(report) == ["b"]
    assert rep.summary(report) == {
        "cases": 2,
        "onnxruntime": {"pass": 2},
        "tvm": {"pass": 2},
        "tvm_static": {"pass": 2},
        "tvm_pack": {"pass": 1},
    }
    md = rep.render_markdown({**report, "meta": {"cases": 2, "versions": {}}})
    assert "## Cases the pack breaks" in md and "- b" in md


def test_cli_summary_prints_the_committed_totals():
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    committed = REPO / "coverage.json"
    if not committed.is_file():
        pytest.skip("coverage.json not generated yet")
    res = CliRunner().invoke(app, ["coverage", "--summary", "--json", "--output", str(committed)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    report = json.loads(committed.read_text())
    assert data["cases"] == len(report["cases"])
    for col in cov.VARIANTS:
        assert data[col]["pass"] == sum(1 for c in report["cases"].values() if c[col]["status"] == cov.PASS)


def test_cli_compare_exits_non_zero_on_a_regression(tmp_path):
    """A baseline claiming TVM as-is passes test_celu (it has no Celu converter) must fail the comparison."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    baseline = _report({"test_celu": ALL_PASS})
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    args = ["coverage", "-k", "test_celu", "-j", "1", "--no-models", "--journal", str(tmp_path / "j.jsonl")]
    args += ["--output", str(tmp_path / "coverage.json"), "--compare", str(path), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 3, res.output
    out = json.loads(res.stdout)
    assert any(r.startswith("test_celu [tvm]: pass -> unsupported op") for r in out["regressions"])
    assert (tmp_path / "coverage.partial.json").is_file()  # a filtered run never overwrites the full report
    assert not (tmp_path / "coverage.json").exists()


def test_cli_missing_report_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    res = CliRunner().invoke(app, ["coverage", "--summary", "--output", str(tmp_path / "none.json")])
    assert res.exit_code == 2
    assert "coverage report not found" in res.output


def test_onnx_reference_baseline_runs_a_case_onnxruntime_refuses():
    """IR v14 cases have no onnxruntime baseline; onnx.reference runs them, and still catches a wrong output."""
    import copy

    case = next(c for c in cov.collect_cases(["test_bitshift_left_int16"]) if c.name == "test_bitshift_left_int16")
    assert case.model.ir_version >= 14
    cov.run_onnx_reference(case, lambda stage: None)  # raises StageError on any failure
    wrong = copy.copy(case)
    wrong.outputs = [np.asarray(case.outputs[0]) + 1]
    with pytest.raises(cov.StageError) as err:
        cov.run_onnx_reference(wrong, lambda stage: None)
    assert err.value.category == cov.MISMATCH
