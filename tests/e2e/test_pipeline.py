"""convert → compile → verify → bench through the library API, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import harmonizer_deploy as hd
from harmonizer_deploy.core.errors import HarmonizerError


def test_convert_writes_checked_onnx_and_sidecar(built):
    model = onnx.load(str(built / "model.onnx"))
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "pianoroll_mask" and dims == ["batch", "time", 46, 8]
    sidecar = json.loads((built / "model.json").read_text())
    assert sidecar["conversion_check"]["max_abs_err"] <= 1e-4
    assert sidecar["outputs"][0]["name"] == "probs"
    assert sidecar["source"]["kind"] == "keras" and len(sidecar["source"]["sha256"]) == 64
    assert {"tf2onnx", "onnx", "onnxruntime"} <= set(sidecar["versions"])


def test_convert_bundled_default_model(bundled_onnx):
    path, result = bundled_onnx
    assert result.max_abs_err <= 1e-4
    assert result.op_types["Conv"] == 16
    assert json.loads(path.with_suffix(".json").read_text())["source"]["path"] == "bundled:default"


def test_convert_saved_model_directory(tmp_path, small_keras):
    import keras

    keras.models.load_model(small_keras).export(tmp_path / "saved", verbose=False)
    result = hd.convert(tmp_path / "saved", tmp_path / "s.onnx")
    assert result.max_abs_err <= 1e-4


def test_compile_writes_manifest_and_reuses_cache(build_copy):
    manifest = json.loads((build_copy / "cpu" / "manifest.json").read_text())
    assert manifest["target"] == "cpu" and manifest["backend"] == "tvm-cpu"
    assert manifest["target_json"]["kind"] == "llvm" and manifest["target_json"]["mcpu"] != "host"
    assert set(manifest["artifacts"]) == {"model.so", "params.npz"}
    assert manifest["versions"]["tvm"]
    again = hd.compile(build_copy / "model.onnx", "cpu", build_copy / "cpu")
    assert again.cached
    forced = hd.compile(build_copy / "model.onnx", "cpu", build_copy / "cpu", force=True)
    assert not forced.cached


def test_changed_model_invalidates_cache(build_copy, small_config, tmp_path):
    from harmonizer_deploy.music.model import build_model, seeded_weights, set_weights

    other = build_model(small_config)
    set_weights(other, small_config, seeded_weights(small_config, seed=9))
    other.save(tmp_path / "other.keras")
    hd.convert(tmp_path / "other.keras", build_copy / "model.onnx")
    assert not hd.compile(build_copy / "model.onnx", "cpu", build_copy / "cpu").cached


def test_verify_passes_with_statistics(built, tmp_path):
    report = hd.verify(built / "cpu", "cpu", num_inputs=2, batch=1, time_steps=16,
                       save_inputs_to=tmp_path / "in.npz")
    assert report.passed
    (out,) = report.outputs
    assert out["max_abs_err"] <= 1e-4 and out["argmax_agreement"] == 1.0
    for key in ("max_rel_err", "p99_abs_err", "required_atol", "required_rtol", "kl_divergence", "nan_count"):
        assert key in out
    replay = hd.verify(built / "cpu", "cpu", load_inputs_from=tmp_path / "in.npz")
    assert replay.input_shapes == [[1, 16, 46, 8], [1, 16, 46, 8]] and replay.passed


def test_verify_catches_a_corrupted_parameter(build_copy):
    params = build_copy / "cpu" / "params.npz"
    with np.load(params) as data:
        arrays = {k: data[k].copy() for k in data.files}
    # the logits layer's kernel (ONNX Conv weight [out=4, in, kh, kw]) with its sign flipped, as a layout bug would
    (logits_kernel,) = [k for k, a in arrays.items() if a.ndim == 4 and a.shape[0] == 4]
    arrays[logits_kernel] = -arrays[logits_kernel]
    np.savez(params, **arrays)
    with pytest.raises(HarmonizerError, match=r"params\.npz modified since compile"):  # refused before loading
        hd.verify(build_copy / "cpu", "cpu", num_inputs=2, batch=1, time_steps=16)
    from harmonizer_deploy.core.artifacts import sha256_file

    manifest_path = build_copy / "cpu" / "manifest.json"  # as if compile itself had produced these params
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"]["params.npz"]["sha256"] = sha256_file(params)
    manifest_path.write_text(json.dumps(manifest))
    report = hd.verify(build_copy / "cpu", "cpu", num_inputs=2, batch=1, time_steps=16)
    assert not report.passed
    assert not report.outputs[0]["passed"], "the numeric comparison itself must fail"
    assert report.outputs[0]["max_abs_err"] > 1e-4


def test_verify_rejects_wrong_target_and_stale_model(build_copy):
    with pytest.raises(HarmonizerError, match="unknown target"):
        hd.verify(build_copy / "cpu", "nosuch")
    (build_copy / "model.onnx").write_bytes((build_copy / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(HarmonizerError, match="changed after this artifact was compiled"):
        hd.verify(build_copy / "cpu", "cpu")


def test_bench_measures_every_backend(built, tmp_path):
    result = hd.bench(batches=(1, 2), time_steps=8, warmup=0, repeats=2, build_dir=built, out_dir=tmp_path)
    rows = {(r["backend"], r["batch"]) for r in result["rows"]}
    peers = {s["backend"] for s in result["skipped"]}  # openvino when the [peers] extra is not installed
    expected = {"tensorflow", "onnxruntime", "openvino", "tvm-cpu"} - peers
    assert rows == {(b, n) for b in expected for n in (1, 2)}
    for r in result["rows"]:
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] and r["first_run_ms"] > 0
        assert r["gflops_per_s"] > 0 and r["ratio_to_onnxruntime"] > 0
    assert result["machine"]["peak_gflops_matmul_f32"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert "| tvm-cpu |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_skips_harmonize_for_a_batch_artifact(build_copy, tmp_path):
    """A static batch-2 artifact gets latency rows, but no harmonize row (the sampler runs batch 1), and the
    bench does not stop there."""
    hd.compile(build_copy / "model.onnx", "cpu", build_copy / "cpu-b2", batch=2, time_steps=8)
    result = hd.bench(batches=(2,), time_steps=8, warmup=0, repeats=1, build_dir=build_copy, out_dir=None,
                      harmonize_repeats=1)
    latency = {r["backend"] for r in result["rows"]}
    harmonized = {r["backend"] for r in result["harmonize"]}
    batch_artifact = {name for name in latency if name.endswith("b2")}
    assert batch_artifact and not batch_artifact & harmonized
    assert {"onnxruntime", "tvm-cpu"} <= harmonized


def test_failed_compile_leaves_no_artifact(built, tmp_path, monkeypatch):
    from harmonizer_deploy.compiler import exporters

    def broken(executable, spec, out_dir):
        (out_dir / "model.so").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setitem(exporters.EXPORTERS, "shared-library", broken)
    out = tmp_path / "cpu"
    with pytest.raises(RuntimeError, match="disk full"):
        hd.compile(built / "model.onnx", "cpu", out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_new_target_is_only_a_toml_file(built, tmp_path, monkeypatch):
    """Adding a target needs no code: a TOML with a generic x86-64 CPU compiles and verifies."""
    from harmonizer_deploy.compiler.targets import targets_dir

    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "cpu.toml").write_text((targets_dir() / "cpu.toml").read_text())
    (tdir / "cpu-generic.toml").write_text(
        (targets_dir() / "cpu.toml").read_text().replace('name = "cpu"', 'name = "cpu-generic"')
        .replace('backend = "tvm-cpu"', 'backend = "tvm-cpu-generic"').replace("mcpu = ", "# mcpu = ")
    )
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(tdir))
    result = hd.compile(built / "model.onnx", "cpu-generic", tmp_path / "out")
    assert "mcpu" not in result.manifest["target_json"]
    assert hd.verify(tmp_path / "out", "cpu-generic", num_inputs=1, batch=1, time_steps=8).passed


def test_every_shipped_target_file_loads():
    from harmonizer_deploy.compiler.pipelines import PIPELINES
    from harmonizer_deploy.compiler.targets import available_targets, load_target

    assert "cpu" in available_targets()
    for name in available_targets():
        spec = load_target(name)
        assert spec.pipeline in PIPELINES, f"{name}: unknown pipeline {spec.pipeline}"
        assert spec.atol > 0 and spec.backend.startswith("tvm-")


def test_model_flops_counts_every_convolution(built, small_config):
    from harmonizer_deploy.benchmark.flops import model_flops

    batch, steps = 2, 8
    expected = sum(2 * batch * steps * 46 * s["out"] * s["in"] * s["kernel"] ** 2 for s in small_config.layer_specs())
    assert model_flops(built / "model.onnx", batch, steps) == expected
