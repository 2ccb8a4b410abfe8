"""bench: what each row records (threads read back, error against onnxruntime, spread, provenance), peers that
are not installed, --compare, the generated README table, and harmonize rows that call the runner they name.

Nothing here asserts on a timing: repeats are tiny and only structure and behaviour are checked.
"""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from harmonizer_deploy.benchmark import bench as b
from harmonizer_deploy.cli import app
from harmonizer_deploy.core.errors import EXIT_USER_ERROR, EXIT_VERIFY_FAILED, HarmonizerError

runner = CliRunner()


def _result(p50s: dict[tuple[str, int], float], harmonize: dict[str, float] | None = None) -> dict:
    rows = [{"backend": n, "batch": batch, "time_steps": 32, "p50_ms": v, "min_ms": v, "p90_ms": v,
             "first_run_ms": v, "load_ms": 1.0, "repeats": 3, "threads": 2, "precision": "f32",
             "max_abs_err_vs_onnxruntime": 0.0, "ratio_to_onnxruntime": v / p50s[("onnxruntime", batch)]}
            for (n, batch), v in p50s.items()]
    return {"rows": rows, "harmonize": [{"backend": n, "melody": "two-bars.mid", "gibbs_steps": 96, "time_steps": 32,
                                         "p50_s": v, "min_s": v, "repeats": 1} for n, v in (harmonize or {}).items()],
            "machine": {"cpu": "test cpu", "cores": 2, "peak_gflops_matmul_f32": 100.0},
            "versions": {"onnxruntime": "1.0", "tvm": "0.1"},
            "config": {"time_steps": 32, "repeats": 3, "warmup": 1, "threads_requested": 2}}


BASE = {("onnxruntime", 1): 3.0, ("tvm-cpu", 1): 2.0, ("onnxruntime", 8): 24.0, ("tvm-cpu", 8): 12.0}


def test_compare_flags_a_planted_20_percent_regression_only():
    baseline = _result(BASE, {"tvm-cpu": 0.2})
    slower = _result({**BASE, ("tvm-cpu", 8): 12.0 * 1.2}, {"tvm-cpu": 0.2 * 1.05})
    changes = {(c["kind"], c["backend"], c["batch"]): c for c in b.compare(slower, baseline, 10)}
    assert len(changes) == 5
    assert changes[("latency", "tvm-cpu", 8)]["regressed"] is True
    assert changes[("latency", "tvm-cpu", 8)]["change_pct"] == pytest.approx(20.0)
    assert not any(c["regressed"] for k, c in changes.items() if k != ("latency", "tvm-cpu", 8))
    assert not any(c["regressed"] for c in b.compare(slower, baseline, 25))  # within a looser threshold
    assert not any(c["regressed"] for c in b.compare(baseline, slower, 10))  # faster is never a regression


def test_bench_compare_exits_3_on_a_regression_and_0_without(built, tmp_path):
    """The CLI runs the bench, prints each row's change and exits 3 when a row is past --threshold. The
    baselines are planted far from any real timing (1e-6 ms / 1e6 ms), so the outcome is not timing-dependent."""
    args = ["bench", "--build-dir", str(built), "--backend", "onnxruntime", "--backend", "tvm-cpu", "--time", "8",
            "--repeats", "1", "--warmup", "0", "--harmonize-repeats", "0", "--out-dir", str(tmp_path / "res")]
    fast = _result({("onnxruntime", 1): 1e-6, ("tvm-cpu", 1): 1e-6})
    slow = _result({("onnxruntime", 1): 1e6, ("tvm-cpu", 1): 1e6})
    for res in (fast, slow):
        for r in res["rows"]:
            r["time_steps"] = 8
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    result = runner.invoke(app, [*args, "--compare", str(tmp_path / "fast.json"), "--threshold", "10"])
    assert result.exit_code == EXIT_VERIFY_FAILED, result.output
    assert "REGRESSED" in result.output and "tvm-cpu batch 1" in result.output
    result = runner.invoke(app, [*args, "--compare", str(tmp_path / "slow.json")])
    assert result.exit_code == 0, result.output
    assert "REGRESSED" not in result.output and "onnxruntime batch 1" in result.output


def test_bench_compare_rejects_a_bad_baseline_before_any_work(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    result = runner.invoke(app, ["bench", "--build-dir", str(tmp_path / "nowhere"), "--compare",
                                 str(tmp_path / "bad.json")])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    assert result.output.startswith("error:") and "Traceback" not in result.output
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(HarmonizerError, match="not a bench result"):
        b.read_result(tmp_path / "list.json")


def test_missing_openvino_is_skipped_with_the_extra_to_install(built, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    result = b.bench(batches=(1,), time_steps=8, warmup=0, repeats=1, build_dir=built, out_dir=None,
                     harmonize_repeats=0, backends=["onnxruntime", "openvino", "openvino-bf16"])
    assert {r["backend"] for r in result["rows"]} == {"onnxruntime"}
    skipped = {s["backend"]: s for s in result["skipped"]}
    assert set(skipped) == {"openvino", "openvino-bf16"}
    assert all("harmonizer-deploy[peers]" in s["fix"] for s in skipped.values())
    assert "harmonizer-deploy[peers]" in b.markdown_table(result)
    assert "openvino" in b.default_backends(built)  # the default bench lists it too, to be skipped the same way
    cli = runner.invoke(app, ["bench", "--build-dir", str(built), "--backend", "onnxruntime", "--backend", "openvino",
                              "--batch", "1", "--time", "8", "--warmup", "0", "--repeats", "1",
                              "--harmonize-repeats", "0", "--no-build", "-o", str(built.parent / "bench-out")])
    assert cli.exit_code == 0, cli.output
    assert "harmonizer-deploy[peers]" in cli.stdout  # printed as text: rich must not eat "[peers]" as markup


def test_a_model_openvino_cannot_compile_is_skipped_with_the_reason(built, monkeypatch):
    ov = pytest.importorskip("openvino")

    class Refusing:
        def compile_model(self, *args, **kwargs):
            raise RuntimeError("Unsupported operation: Foo\nmore detail")

    monkeypatch.setattr(ov, "Core", Refusing)
    result = b.bench(batches=(1,), time_steps=8, warmup=0, repeats=1, build_dir=built, out_dir=None,
                     harmonize_repeats=0, backends=["onnxruntime", "openvino"])
    assert [r["backend"] for r in result["rows"]] == ["onnxruntime"]
    (skipped,) = result["skipped"]
    assert skipped["backend"] == "openvino" and "Unsupported operation: Foo" in skipped["reason"]


def test_rows_record_threads_as_measured_error_spread_and_provenance(built, tmp_path):
    """--threads 1 reaches every runtime: each row reports the count its runtime reads back; every row carries
    its max abs error against onnxruntime; JSON and markdown record versions, hashes, git, CPU and spread."""
    pytest.importorskip("openvino")
    import tvm

    from harmonizer_deploy.run.backends import set_tvm_threads

    before = tvm.runtime.num_threads()
    try:
        result = b.bench(backends=["onnxruntime", "openvino", "openvino-bf16", "tvm-cpu"], batches=(1, 2),
                         time_steps=8, warmup=0, repeats=3, build_dir=built, out_dir=tmp_path,
                         harmonize_repeats=0, threads=1)
    finally:
        set_tvm_threads(before)  # the pool is per process: give later tests the size they had
    rows = {(r["backend"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {(n, bt) for n in ("onnxruntime", "openvino", "openvino-bf16", "tvm-cpu") for bt in (1, 2)}
    for r in rows.values():
        assert r["threads"] == 1 and r["threads_source"] and r["cpu_p50_ms"] >= 0
        assert r["stdev_ms"] >= 0 and r["iqr_ms"] >= 0 and r["min_ms"] <= r["p50_ms"] <= r["p90_ms"]
    assert rows[("onnxruntime", 1)]["max_abs_err_vs_onnxruntime"] == 0.0
    assert rows[("tvm-cpu", 1)]["max_abs_err_vs_onnxruntime"] < 1e-4
    assert rows[("openvino", 1)]["precision"] == "f32" and rows[("openvino-bf16", 1)]["precision"] == "bf16"
    assert rows[("openvino", 2)]["max_abs_err_vs_onnxruntime"] < 1e-4
    assert rows[("openvino-bf16", 2)]["max_abs_err_vs_onnxruntime"] > 0  # bf16 is measurably not f32
    assert set(rows[("tvm-cpu", 1)]["artifact_sha256"]) >= {"model.so"}
    assert {"onnxruntime", "openvino", "tvm", "tvm_ffi", "numpy", "onnx"} <= set(result["versions"])
    assert len(result["model"]["sha256"]) == 64 and result["config"]["threads_requested"] == 1
    assert result["git"] is None or len(result["git"]["commit"]) == 40
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["versions"] == result["versions"]
    md = (tmp_path / "bench.md").read_text()
    assert "stdev ms" in md and "IQR ms" in md and "### Who wins, batch 2" in md and "max abs err" in md
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_tensorflow_threads_are_read_back_not_echoed(built):
    """TensorFlow's intra-op count can only be set before its runtime starts (here it has: the fixtures ran
    TensorFlow); the row then says what TensorFlow uses, not what was asked."""
    import tensorflow as tf

    from harmonizer_deploy.run.backends import open_backend

    backend = open_backend("tensorflow", built, threads=1)
    reported = tf.config.threading.get_intra_op_parallelism_threads()
    settings = backend.runtime_settings()
    assert settings["threads"] == (reported or len(__import__("os").sched_getaffinity(0)))
    (digest,) = settings["artifact_sha256"].values()  # the .keras it ran, hashed
    assert len(digest) == 64 and settings["model"].endswith(".keras")


class _Fake:
    """A backend that answers like the model and counts its calls."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        probs = np.ones((*x.shape[:3], 4), dtype=np.float32)
        return probs / probs.shape[2]


def test_harmonize_rows_call_the_runner_they_name_as_often_as_the_cli():
    """Each harmonize row times its own backend (the bug: rows for three backends reported one time), with
    the CLI's number of network calls for the same melody, steps, seed and window."""
    from harmonizer_deploy.music.harmonize import harmonize_notes
    from harmonizer_deploy.music.midi import read_melody
    from harmonizer_deploy.music.sampling import GibbsSettings

    opened = {n: _Fake(n) for n in ("tensorflow", "onnxruntime", "tvm-cpu")}
    rows = b.harmonize_rows(opened, repeats=2, seed=0)
    reference = _Fake("reference")
    notes, _ = read_melody(b.HARMONIZE_SAMPLE)
    harmonize_notes(notes, reference.run, 0, GibbsSettings(steps=b.HARMONIZE_STEPS))
    assert [r["backend"] for r in rows] == list(opened)
    for r in rows:
        assert r["runner"] == [r["backend"]]
        assert r["network_calls"] == reference.calls
        assert opened[r["backend"]].calls == 2 * reference.calls
        assert r["cpu_p50_s"] >= 0 and r["repeats"] == 2


def test_readme_table_is_generated_from_results_and_replaces_only_its_block(tmp_path):
    result = _result(BASE, {"onnxruntime": 0.3, "tvm-cpu": 0.15})
    table = b.readme_table(result)
    assert "| onnxruntime 1.0 | 2 | f32 | 3.00 ms | 24.00 ms | 0.300 s | 0.0e+00 |" in table
    assert "| tvm-cpu 0.1 | 2 | f32 | 2.00 ms (0.67×) | 12.00 ms (0.50×) | 0.150 s (0.50×) |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{b.README_START}\nold table\n{b.README_END}\nafter\n")
    result2 = copy.deepcopy(result)
    result2["rows"][0]["p50_ms"] = 3.5
    out = runner.invoke(app, ["bench", "--readme-table", str(_write(tmp_path / "r.json", result2)),
                              "--readme", str(readme)])
    assert out.exit_code == 0, out.output
    text = readme.read_text()
    assert "old table" not in text and "3.50 ms" in text
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{b.README_END}\nafter\n")
    (tmp_path / "plain.md").write_text("no markers\n")
    out = runner.invoke(app, ["bench", "--readme-table", str(tmp_path / "r.json"), "--readme",
                              str(tmp_path / "plain.md")])
    assert out.exit_code == EXIT_USER_ERROR and "no generated bench table block" in " ".join(out.output.split())
    assert (tmp_path / "plain.md").read_text() == "no markers\n"


def test_a_result_with_its_own_named_block_replaces_that_block_only(tmp_path):
    """One README can hold several generated tables (the Doodle's next to the main one): a block named after
    the result file's stem is the one its table replaces."""
    main_start, main_end = b.readme_markers()
    doodle_start, doodle_end = b.readme_markers("doodle")
    readme = tmp_path / "README.md"
    readme.write_text(f"{main_start}\nmain table\n{main_end}\nmiddle\n{doodle_start}\nold doodle\n{doodle_end}\nend\n")
    out = runner.invoke(app, ["bench", "--readme-table", str(_write(tmp_path / "doodle.json", _result(BASE))),
                              "--readme", str(readme)])
    assert out.exit_code == 0, out.output
    assert "'doodle' table" in out.output
    text = readme.read_text()
    assert "main table" in text and "old doodle" not in text
    assert text.index(doodle_start) < text.index("| onnxruntime 1.0 |") < text.index(doodle_end)
    out = runner.invoke(app, ["bench", "--readme-table", str(_write(tmp_path / "cpu-x.json", _result(BASE))),
                              "--readme", str(readme)])  # no block of its own: the unnamed (main) one
    assert out.exit_code == 0, out.output
    assert "main table" not in readme.read_text() and readme.read_text().count("| onnxruntime 1.0 |") == 2


def test_markdown_warns_when_the_machine_was_busy():
    idle = _result(BASE)
    idle["machine"] |= {"load_average": [0.5, 0.5, 0.5], "cpus_allowed": 2}
    assert "machine was busy" not in b.markdown_table(idle)
    busy = copy.deepcopy(idle)
    busy["machine"]["load_average"] = [9.0, 7.0, 5.0]
    assert "machine was busy** (1-minute load average 9.0 on 2 CPUs)" in b.markdown_table(busy)


def _write(path, data: dict):
    path.write_text(json.dumps(data))
    return path


def test_git_commit_only_for_a_checkout_that_tracks_the_package(tmp_path, monkeypatch):
    import subprocess

    here = b.git_commit()
    assert here is None or len(here["commit"]) == 40
    fake = tmp_path / "repo" / "bench.py"
    fake.parent.mkdir()
    fake.write_text("")
    monkeypatch.setattr(b, "__file__", str(fake))
    assert b.git_commit() is None  # not a git checkout
    subprocess.run(["git", "init", "-q", str(fake.parent)], check=True)
    assert b.git_commit() is None  # a repository, but one that does not track this file (a venv inside it)
