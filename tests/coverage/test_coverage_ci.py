"""The CI coverage subset: every op covered in ~300 cases, and a planted pack regression makes the comparison
with the committed coverage.json exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmonizer_deploy.cli.app import app
from harmonizer_deploy.core.errors import EXIT_VERIFY_FAILED
from harmonizer_deploy.coverage import tracker
from harmonizer_deploy.coverage.ci import SUBSET_SIZE, ci_subset

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def committed():
    return json.loads((REPO / "coverage.json").read_text())


def test_subset_covers_every_op_in_about_300_cases(committed):
    names = ci_subset(committed)
    assert len(names) == SUBSET_SIZE
    cases = committed["cases"]
    assert {cases[n]["op"] for n in names} == {c["op"] for c in cases.values()}
    assert ci_subset(committed) == names  # deterministic


def test_planted_pack_regression_exits_3(tmp_path, monkeypatch):
    """The pack's Celu converter disabled in the workers: test_celu (TVM + pack) no longer passes."""
    pytest.importorskip("tvm")
    monkeypatch.setitem(tracker.RUNNERS, "tvm_pack", "coverage_fake_runners:pack_without_celu")
    res = runner.invoke(app, ["coverage-check", "-k", "Celu", "-j", "2", "-o", str(tmp_path / "ci.json")])
    assert res.exit_code == EXIT_VERIFY_FAILED, res.output
    assert "REGRESSION test_celu [tvm_pack]: pass -> " in res.output


@pytest.mark.slow
def test_unplanted_subset_of_the_same_op_passes(tmp_path):
    pytest.importorskip("tvm")
    res = runner.invoke(app, ["coverage-check", "-k", "Celu", "-j", "2", "-o", str(tmp_path / "ci.json")])
    assert res.exit_code == 0, res.output
    assert "0 regressions" in res.output


def test_subset_report_never_overwrites_the_baseline(tmp_path):
    baseline = tmp_path / "coverage.json"
    baseline.write_text((REPO / "coverage.json").read_text())
    res = runner.invoke(app, ["coverage-check", "--baseline", str(baseline), "-k", "Relu", "-o", str(baseline)])
    assert res.exit_code == 2
    assert "would overwrite the baseline" in res.output
