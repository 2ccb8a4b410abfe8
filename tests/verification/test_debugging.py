"""debug localize / reduce / verify, and verify's error statistics, on a tiny model with a planted fault.

The plant (tests/plant.py) scales one node's output on the TVM side only; `localize` must find exactly that
node by compiling chunks for the target and comparing them with onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import harmonizer_deploy as hd
import plant
from harmonizer_deploy.cli import app
from harmonizer_deploy.cli.common import parse_tolerance
from harmonizer_deploy.core.compare import error_stats
from harmonizer_deploy.core.errors import EXIT_USER_ERROR, EXIT_VERIFY_FAILED, HarmonizerError
from harmonizer_deploy.verification import debug as debugging

cli = CliRunner()


@pytest.fixture(scope="session")
def sensitive_built(tmp_path_factory, small_config):
    """The tiny model with batch-norm gamma 1 (not Coconet's 0.1), so activations stay O(1) through the
    layers and a fault in the middle reaches `probs`."""
    from harmonizer_deploy.music.model import build_model, seeded_weights, set_weights

    weights = {k: (np.ones_like(v) if k.endswith("gamma") else v)
               for k, v in seeded_weights(small_config, seed=1).items()}
    model = build_model(small_config)
    set_weights(model, small_config, weights)
    build = tmp_path_factory.mktemp("sensitive")
    model.save(build / "tiny.keras")
    hd.convert(build / "tiny.keras", build / "model.onnx")
    hd.compile(build / "model.onnx", "cpu", build / "cpu")
    return build


def node_named(build, op_type: str, nth: int = 0) -> tuple[int, str]:
    nodes = onnx.load(str(build / "model.onnx")).graph.node
    index = [i for i, n in enumerate(nodes) if n.op_type == op_type][nth]
    return index, nodes[index].name


@pytest.fixture
def planted(monkeypatch, sensitive_built, tmp_path):
    """plant(op_type, nth, factor) → (artifact dir compiled with the fault, node index, node name)."""

    def make(op_type: str, nth: int = 0, factor: float = 1.05):
        index, name = node_named(sensitive_built, op_type, nth)
        plant.install(monkeypatch, name, factor)
        out = tmp_path / f"planted-{op_type}-{nth}"
        hd.compile(sensitive_built / "model.onnx", "cpu", out, force=True)
        return out, index, name

    return make


@pytest.mark.parametrize(("op_type", "nth"), [("Conv", 3), ("Softmax", 0)])
def test_localize_names_the_planted_node(planted, op_type, nth):
    artifact, index, name = planted(op_type, nth)
    report = debugging.localize(artifact, "cpu", chunk_size=3)
    assert not report.full_model["passed"]
    assert report.culprit is not None
    assert (report.culprit["name"], report.culprit["op_type"], report.culprit["index"]) == (name, op_type, index)
    # its inputs agree, its own output does not, and it is wrong alone (fed onnxruntime's inputs)
    assert report.culprit["inputs"] and all(i["passed"] for i in report.culprit["inputs"])
    assert not any(o["passed"] for o in report.culprit["outputs"])
    assert report.culprit["alone_failed"]
    assert report.culprit["required_atol"] > report.culprit["outputs"][0]["atol"]
    # the chain ends at the culprit, everything before it agrees; the scan stopped at the culprit's chunk
    assert report.chain[-1]["name"] == name and all(c["passed"] for c in report.chain[:-1])
    assert [c["index"] for c in report.checked] == list(range((index // 3 + 1) * 3))[: report.num_nodes]
    assert report.submodels_compiled == index // 3 + 1 + 1  # chunks up to the culprit's, plus the node alone
    assert "wrong on its own" in report.verdict


def test_localize_tells_drift_from_a_wrong_node(planted, sensitive_built, tmp_path):
    """With the planted Conv's own tensor allowed a loose tolerance, the first tensor out of tolerance is the
    next node's (a Relu): correct alone, so the verdict is drift, and reduce needs the Conv for context."""
    artifact, index, name = planted("Conv", 3)
    nodes = onnx.load(str(sensitive_built / "model.onnx")).graph.node
    loose = {nodes[index].output[0]: 1.0}
    report = debugging.localize(artifact, "cpu", chunk_size=4, atol=loose)
    assert report.culprit["index"] == index + 1 and report.culprit["op_type"] == "Relu"
    assert report.culprit["inputs"][0]["producer"] == name and report.culprit["inputs"][0]["passed"]
    assert not report.culprit["alone_failed"] and "drift" in report.verdict
    reduced = debugging.reduce(artifact, "cpu", tmp_path / "drift", chunk_size=4, atol=loose)
    assert reduced.nodes == [name, nodes[index + 1].name]
    assert [t["failed"] for t in reduced.tried] == [False, True]


def test_localize_clean_artifact_finds_nothing(sensitive_built):
    report = debugging.localize(sensitive_built / "cpu", "cpu")
    assert report.full_model["passed"] and report.culprit is None and not report.diverged
    assert report.submodels_compiled == 0
    scanned = debugging.localize(sensitive_built / "cpu", "cpu", chunk_size=4, scan_always=True)
    assert len(scanned.checked) == scanned.num_nodes and all(c["passed"] for c in scanned.checked)
    assert scanned.culprit is None and scanned.submodels_compiled == -(-scanned.num_nodes // 4)


def test_localize_memory_follows_chunk_size_not_model_size(sensitive_built):
    """What the scan holds at once: boundary tensors plus one chunk's outputs, on both sides."""
    small = debugging.localize(sensitive_built / "cpu", "cpu", chunk_size=2, scan_always=True)
    whole = debugging.localize(sensitive_built / "cpu", "cpu", chunk_size=small.num_nodes, scan_always=True)
    tensors = small.num_nodes + 1  # one output per node, plus the graph input
    assert whole.peak_live_tensors == 2 * tensors
    assert small.peak_live_tensors <= 2 * (2 + 3)  # chunk outputs + at most 3 live boundary tensors, per side
    assert small.peak_live_bytes < whole.peak_live_bytes / 2


def test_reduce_writes_a_small_model_that_fails_only_with_the_plant(planted, monkeypatch, tmp_path):
    artifact, _index, name = planted("Conv", 3)
    report = debugging.reduce(artifact, "cpu", tmp_path / "reduced", chunk_size=4)
    assert report.node == name and report.num_nodes <= 3
    model = onnx.load(report.model_path)
    onnx.checker.check_model(model, full_check=True)
    assert name in [n.name for n in model.graph.node] and len(model.graph.node) == report.num_nodes
    inputs = np.load(report.inputs_path)
    assert sorted(inputs.files) == sorted(i.name for i in model.graph.input)
    details = json.loads((tmp_path / "reduced" / "reduced.json").read_text())
    assert details["node"] == name and details["localize"]["culprit"]["name"] == name

    assert not debugging.verify_onnx(report.model_path, report.inputs_path, "cpu").passed
    monkeypatch.undo()  # remove the plant: the same reduced model now passes
    clean = debugging.verify_onnx(report.model_path, report.inputs_path, "cpu")
    assert clean.passed and clean.outputs[0]["max_abs_err"] < 1e-4
    repro = subprocess.run([sys.executable, "repro.py"], cwd=tmp_path / "reduced", capture_output=True, text=True,
                           timeout=300)
    assert repro.returncode == 0 and "PASS" in repro.stdout, repro.stderr[-2000:]


def test_reduce_by_node_name_and_nothing_to_reduce(sensitive_built, planted, tmp_path):
    with pytest.raises(HarmonizerError, match="nothing to reduce"):
        debugging.reduce(sensitive_built / "cpu", "cpu", tmp_path / "r0")
    with pytest.raises(HarmonizerError, match="no node named"):
        debugging.reduce(sensitive_built / "cpu", "cpu", tmp_path / "r1", node="nope")
    artifact, _index, name = planted("Softmax")
    report = debugging.reduce(artifact, "cpu", tmp_path / "r2", node=name)
    assert report.nodes == [name] and report.tried[0]["failed"]


def test_cli_debug_localize_reduce_verify(planted, monkeypatch, tmp_path):
    artifact, _index, name = planted("Conv", 3)
    result = cli.invoke(app, ["debug", "localize", str(artifact), "--chunk-size", "4", "--json"])
    assert result.exit_code == EXIT_VERIFY_FAILED, result.output
    assert json.loads(result.stdout)["culprit"]["name"] == name
    text = cli.invoke(app, ["debug", "localize", str(artifact), "--chunk-size", "4"])
    assert "first diverging node" in text.output and "Conv" in text.output
    reduced = tmp_path / "bug"
    result = cli.invoke(app, ["debug", "reduce", str(artifact), "-o", str(reduced), "--chunk-size", "4"])
    assert result.exit_code == 0, result.output
    args = ["debug", "verify", str(reduced / "reduced.onnx"), "--inputs", str(reduced / "inputs.npz")]
    assert cli.invoke(app, args).exit_code == EXIT_VERIFY_FAILED
    monkeypatch.undo()
    assert cli.invoke(app, args).exit_code == 0
    bad = cli.invoke(app, ["debug", "localize", str(artifact), "--atol", "nope=1"])
    assert bad.exit_code == EXIT_USER_ERROR and "not a tensor of this model" in bad.output


# --- verify's error statistics ------------------------------------------------------------------------------


def test_verify_report_has_error_stats_and_argmax_agreement(sensitive_built, tmp_path):
    png = tmp_path / "err.png"
    result = cli.invoke(app, ["verify", str(sensitive_built / "cpu"), "--json", "--histogram", str(png),
                              "--num-inputs", "2"])
    assert result.exit_code == 0, result.output
    (out,) = json.loads(result.stdout)["outputs"]
    for key in ("required_atol", "required_rtol", "p99_abs_err", "max_abs_err", "median_abs_err", "nan_count"):
        assert key in out
    assert out["argmax_agreement"] == 1.0 and out["kl_divergence"] < 1e-6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_per_output_tolerance_fail_fast_and_ranges(planted, tmp_path):
    artifact, _index, _name = planted("Softmax", factor=1.01)
    failed = hd.verify(artifact, "cpu", num_inputs=3, fail_fast=True)
    assert not failed.passed and failed.num_inputs == 1 and "--fail-fast" in failed.notes[0]
    assert hd.verify(artifact, "cpu", num_inputs=1, atol={"probs": 1e-2}).passed
    result = cli.invoke(app, ["verify", str(artifact), "--atol", "probs=1e-2", "--num-inputs", "1", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["outputs"][0]["atol"] == 1e-2
    bad = cli.invoke(app, ["verify", str(artifact), "--atol", "logits=1e-2"])
    assert bad.exit_code == EXIT_USER_ERROR and "not a tensor of this model" in bad.output
    uniform = hd.verify(artifact, "cpu", num_inputs=1, value_range=(-2.0, 3.0), atol=1.0)
    (low, high), = uniform.input_ranges
    assert -2.0 <= low < -1.5 and 2.5 < high <= 3.0


def test_verify_validate_flags_nan_without_reference(planted):
    artifact, _index, _name = planted("Softmax", factor=float("nan"))
    report = hd.verify(artifact, "cpu", num_inputs=1, validate=True)
    assert report.mode == "validate" and not report.passed and report.outputs[0]["nan_count"] > 0
    result = cli.invoke(app, ["verify", str(artifact), "--validate", "--num-inputs", "1"])
    assert result.exit_code == EXIT_VERIFY_FAILED and "NaN" in result.output


def test_verify_json_of_a_nan_artifact_is_strict_json(planted):
    """Issue 15: `verify --json` printed a bare NaN (invalid JSON); non-finite numbers are null plus a flag."""
    artifact, _index, _name = planted("Softmax", factor=float("nan"))
    result = cli.invoke(app, ["verify", str(artifact), "--num-inputs", "1", "--json"])
    assert result.exit_code == EXIT_VERIFY_FAILED, result.output

    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    out = json.loads(result.stdout, parse_constant=refuse)["outputs"][0]
    assert out["passed"] is False and out["nan_count"] > 0
    flagged = [k for k in out if k.endswith("_non_finite")]
    assert flagged and all(out[k.removesuffix("_non_finite")] is None for k in flagged)


def test_check_error_stat_max_mean_median():
    expected = np.ones(1000)
    actual = expected.copy()
    actual[0] += 0.5  # one outlier
    assert not error_stats(actual, expected, 1e-3, 0, "max")["passed"]
    assert error_stats(actual, expected, 1e-3, 0, "mean")["passed"]  # mean error 5e-4
    assert error_stats(actual, expected, 1e-3, 0, "median")["passed"]
    actual[:600] += 0.01
    assert not error_stats(actual, expected, 1e-3, 0, "median")["passed"]
    with pytest.raises(HarmonizerError):
        error_stats(actual, expected, 1e-3, 0, "p42")


def test_parse_tolerance():
    assert parse_tolerance(None, "atol") is None
    assert parse_tolerance(["1e-5"], "atol") == 1e-5
    assert parse_tolerance(["probs=1e-5", "2e-4"], "atol") == {"probs": 1e-5, "*": 2e-4}
    with pytest.raises(HarmonizerError, match="not a number"):
        parse_tolerance(["probs=abc"], "atol")
