"""One CLI: -h everywhere, fixed choices checked before any work, -v/-q, --version, backends/targets/doctor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from harmonizer_deploy.cli import app
from harmonizer_deploy.core.errors import EXIT_USER_ERROR

runner = CliRunner()
REPO_SAMPLE = Path(__file__).resolve().parents[2] / "src" / "harmonizer_deploy" / "music" / "samples" / "two-bars.mid"


def all_command_paths() -> list[list[str]]:
    """Every command and sub-group of the app, as argv prefixes."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix):
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_and_group_accepts_dash_h():
    paths = all_command_paths()
    assert ["debug", "localize"] in paths and ["ops", "scan"] in paths and ["backends"] in paths
    for path in paths:
        res = runner.invoke(app, [*path, "-h"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output, path


def test_bad_choices_fail_before_any_work_listing_the_valid_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["verify", "--check-error-stat", "p99"], ["max", "mean", "median"]),
        (["convert", "--custom-op-strategy", "magic"], ["auto", "none", "rewrite", "custom-op", "decompose"]),
        (["harmonize", "melody.mid", "--backend", "tvm-nosuch"], ["tensorflow", "onnxruntime", "tvm-cpu"]),
        (["evaluate", "--dataset", "x.npz", "--backend", "torch"], ["onnxruntime", "tvm-cpu"]),
        (["bench", "--backend", "onnxruntime", "--backend", "tvm-gpu"], ["onnxruntime", "tvm-cuda"]),
    ]
    for args, valid in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == EXIT_USER_ERROR, (args, res.output)
        assert all(v in res.output for v in valid), (args, res.output)
    assert list(tmp_path.iterdir()) == []  # nothing converted, compiled or written


def test_the_console_script_prints_usage_errors_as_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harmonizer_deploy.cli", "verify", "--check-error-stat", "p99"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == EXIT_USER_ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'max', 'mean', 'median'" in lines[0]
    assert proc.stdout == ""


def test_choices_match_the_library():
    from harmonizer_deploy.cli.common import CHECK_ERROR_STATS, CUSTOM_OP_STRATEGIES
    from harmonizer_deploy.custom_ops.registry import STRATEGIES
    from harmonizer_deploy.verification.verify import CHECK_ERROR_STATS as LIBRARY_STATS

    assert CHECK_ERROR_STATS == LIBRARY_STATS
    assert set(CUSTOM_OP_STRATEGIES) == {"auto", "none", *STRATEGIES}


def test_version_names_the_stack():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    for name in ("harmonizer-deploy", "TVM", "tvm-ffi", "onnx", "onnxruntime"):
        assert name in res.stdout
    from harmonizer_deploy.core.extras import installed

    assert ("TensorFlow" in res.stdout) == installed("tensorflow")


def test_backends_lists_names_and_whether_they_run_here(tmp_path):
    from harmonizer_deploy.run.tvm import device_present

    res = runner.invoke(app, ["backends", "--build-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"tensorflow", "onnxruntime", "onnxruntime-cuda", "tvm-cpu", "tvm-cuda"} <= rows.keys()
    assert rows["onnxruntime"]["can_run"] is True and rows["onnxruntime"]["built"] is False
    assert rows["tvm-cuda"]["can_run"] is device_present("cuda")


def test_targets_says_can_build_and_can_run_separately():
    from harmonizer_deploy.run.tvm import device_present

    res = runner.invoke(app, ["targets", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["cpu"]["can_build"] is True and rows["cpu"]["can_run"] is True
    # cuda may be buildable (nvcc) but must not claim to run without a GPU
    assert rows["cuda"]["can_run"] is device_present("cuda")
    table = runner.invoke(app, ["targets"]).stdout
    assert "can build" in table and "can run" in table


def test_doctor_marks_required_hides_developer_tools_and_strict_fails(monkeypatch):
    from harmonizer_deploy.run import doctor

    res = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["onnx"]["required"] is True and checks["tensorflow-cpu"]["required"] is False
    assert "docker" not in checks and "hadolint" not in checks
    assert res.exit_code == 0
    shown = {c["name"] for c in json.loads(runner.invoke(app, ["doctor", "--all", "--json"]).stdout)}
    assert {"docker", "hadolint"} <= shown
    monkeypatch.setattr(doctor, "_package_checks",
                        lambda: [doctor.Check("onnx", False, "not installed", "pip install onnx", required=True)])
    assert runner.invoke(app, ["doctor"]).exit_code == 0
    strict = runner.invoke(app, ["doctor", "--strict"])
    assert strict.exit_code != 0 and "required: onnx" in strict.stderr


def test_doctor_fixes_for_a_pip_install_name_no_repository_script():
    from harmonizer_deploy.compiler.targets import available_targets, load_target
    from harmonizer_deploy.compiler.web.toolchain import EMSCRIPTEN_FIX
    from harmonizer_deploy.run.doctor import fix_for_this_install
    from harmonizer_deploy.web.browser import CHROMIUM_FIX
    from harmonizer_deploy.web.jsdeps import NPM_FIX

    fixes = [load_target(n).fix for n in available_targets()] + [EMSCRIPTEN_FIX, CHROMIUM_FIX, NPM_FIX]
    assert any("scripts/" in f or "docker build" in f for f in fixes)  # the checkout's fixes do name them
    for fix in fixes:
        pip_fix = fix_for_this_install(fix, checkout=False)
        assert "scripts/" not in pip_fix and "docker build" not in pip_fix, pip_fix
    assert fix_for_this_install(fixes[0], checkout=True) == fixes[0]


def test_warnings_go_to_stderr_and_quiet_hides_progress(capsys):
    from harmonizer_deploy.cli.check import print_verify
    from harmonizer_deploy.cli.common import configure_logging
    from harmonizer_deploy.run.ensure import log

    configure_logging()
    report = SimpleNamespace(mode="validate", outputs=[], input_ranges=[], histogram=None, notes=["odd input"],
                             passed=True)
    print_verify(report)
    log.info("building something (first use)…")
    captured = capsys.readouterr()
    assert "odd input" not in captured.out and "warning: odd input" in captured.err
    assert "building something" in captured.err
    configure_logging(quiet=True)
    log.info("building again (first use)…")
    print_verify(report)
    captured = capsys.readouterr()
    assert "building again" not in captured.err and "warning: odd input" in captured.err
    configure_logging()


@pytest.mark.parametrize(("command", "old", "new"), [("bench", "--out-dir", "--output"),
                                                   ("serve", "--build", "--build-dir")])
def test_old_option_spellings_are_hidden_aliases_that_warn(command, old, new, capsys):
    import re

    from harmonizer_deploy.cli.common import configure_logging, deprecated

    res = runner.invoke(app, [command, old, "x", "-h"])
    assert res.exit_code == 0, res.output  # still parsed
    assert new in res.stdout and not re.search(re.escape(old) + r"(?![\w-])", res.stdout)  # hidden from help
    configure_logging()
    assert deprecated(old, new, None, "default") == "default"
    assert deprecated(old, new, "x", "default") == "x"
    assert f"{old} is deprecated; use {new}" in capsys.readouterr().err


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path, small_keras):
    """TensorFlow's C++ start-up lines (absl's 'All log messages before absl::InitializeLog()', oneDNN) bypass
    TF_CPP_MIN_LOG_LEVEL; the CLI silences them while tensorflow is first imported, and -v lets them through."""
    sample = str(REPO_SAMPLE)
    args = ["harmonize", sample, "-o", "x.mid", "--backend", "tensorflow", "--model", str(small_keras), "--steps", "1"]
    quiet = subprocess.run([sys.executable, "-m", "harmonizer_deploy.cli", *args], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "absl" not in quiet.stderr and "oneDNN" not in quiet.stderr and "I0000" not in quiet.stderr
    assert quiet.stderr.strip() == ""
