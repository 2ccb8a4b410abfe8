"""GPU targets without a GPU: cuda builds (nvcc) and says clearly that running needs an NVIDIA GPU; vulkan says
what the PyPI TVM lacks; per-function dlight scheduling; deploy bundles run with the TVM runtime alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import harmonizer_deploy as hd
from harmonizer_deploy.cli import app
from harmonizer_deploy.core.errors import EXIT_NO_DEVICE, EXIT_USER_ERROR, HarmonizerError

runner = CliRunner()
HAS_NVCC = shutil.which("nvcc") is not None


def one_line(result) -> str:
    return " ".join(result.output.split())


def cuda_present() -> bool:
    from harmonizer_deploy.run.tvm import device_present

    return device_present("cuda")


# A Python that cannot import the `tvm` compiler package at all, then runs the bundle's run.py and finally
# proves libtvm_compiler.so never entered the process.
RUNTIME_ONLY = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError("the TVM compiler package is blocked in this test")
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1], *sys.argv[2:]]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
maps = open("/proc/self/maps").read()
assert "libtvm_compiler" not in maps, "the compiler library was loaded"
assert "libtvm_runtime.so" in maps, "the bundle's runtime was not loaded"
sys.exit(code)
"""


def run_bundle(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-I", "-c", RUNTIME_ONLY, str(bundle / "run.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=bundle.parent)


# --- vulkan -----------------------------------------------------------------------------------------------

def test_vulkan_compile_with_pypi_tvm_names_the_missing_codegen_and_the_fix(built, tmp_path):
    import tvm

    if tvm.get_global_func("target.build.vulkan", allow_missing=True) is not None:
        pytest.skip("this TVM has Vulkan codegen; the vulkan target compiles here")
    result = runner.invoke(app, ["compile", str(built / "model.onnx"), "--target", "vulkan", "-o",
                                 str(tmp_path / "vk")])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    text = one_line(result)
    assert text.startswith("error:") and "Traceback" not in text
    for fragment in ("target.build.vulkan", "USE_VULKAN=OFF", "docker/vulkan.Dockerfile", "mlc-ai"):
        assert fragment in text, text
    assert not (tmp_path / "vk").exists()


# --- cuda target: architecture ----------------------------------------------------------------------------

def test_cuda_arch_default_detected_and_selectable(monkeypatch):
    from harmonizer_deploy.compiler import targets

    spec = targets.load_target("cuda")
    assert spec.target["arch"] == "detect"
    monkeypatch.setattr(targets, "detect_gpu_arch", lambda device: None)
    assert spec.resolved_target()["arch"] == spec.options["default_arch"] == "sm_80"
    monkeypatch.setattr(targets, "detect_gpu_arch", lambda device: "sm_89")
    assert spec.resolved_target()["arch"] == "sm_89"
    assert spec.with_arch("sm_90").resolved_target()["arch"] == "sm_90"
    with pytest.raises(HarmonizerError, match="'sm_75' is not one of") as info:
        spec.with_arch("sm_75")
    assert "sm_80, sm_86, sm_89, sm_90" in info.value.fix
    with pytest.raises(HarmonizerError, match="no selectable architecture"):
        targets.load_target("cpu").with_arch("sm_90")
    assert spec.resolved_host() == {"kind": "llvm"}, "a bundle's host code must run on any x86-64 GPU box"


# --- per-function scheduling ------------------------------------------------------------------------------

def _fused_module(onnx_path: Path, target):
    import onnx
    from tvm import relax

    from harmonizer_deploy.compiler.relax_import import import_onnx

    mod, _, _, _ = import_onnx(onnx.load(str(onnx_path)))
    with target:
        for p in (relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                  relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()):
            mod = p(mod)
    return mod


def test_a_failing_rule_falls_back_for_that_function_only(built, monkeypatch):
    """With TVM's own auto_pad handling (separate pad kernels, which FuseOps fuses after a conv) dlight's Matmul
    rule raises on the conv + pad fusions and GeneralReduction makes a dynamic-size shared buffer for them;
    those functions fall back, the others keep their rule. (compile makes the pads explicit, after which every
    conv gets Matmul: see the next test.)"""
    from harmonizer_deploy.compiler.gpu.schedule import per_function_schedule
    from harmonizer_deploy.compiler.scheduling import ScheduleReport
    from harmonizer_deploy.compiler.targets import load_target
    from harmonizer_deploy.custom_ops import tvm_prepare

    monkeypatch.setattr(tvm_prepare, "explicit_same_padding", lambda model: (model, 0))

    target = load_target("cuda").with_arch("sm_80").tvm_target()
    mod = _fused_module(built / "model.onnx", target)
    with target:
        scheduled = per_function_schedule(report=(schedules := ScheduleReport()))(mod)
    report = schedules.to_dict()
    funcs = report["functions"]
    prim_names = {gv.name_hint for gv, f in mod.functions_items() if type(f).__name__ == "PrimFunc"}
    assert set(funcs) == prim_names, "every kernel gets a schedule"
    assert all(int(scheduled[name].attrs["tirx.is_scheduled"]) == 1 for name in prim_names)
    assert "Matmul" in funcs.values() and "Fallback" in funcs.values()
    fell_back = {k.split("/")[0] for k in report["rule_errors"]}
    assert fell_back and all(funcs[name] == "Fallback" for name in fell_back)
    assert any("AssertionError" in v for v in report["rule_errors"].values())
    assert any("dynamic-size shared buffer" in v for v in report["rule_errors"].values())


def test_explicit_padding_gives_every_conv_the_matmul_rule(built):
    from harmonizer_deploy.compiler.gpu.schedule import per_function_schedule
    from harmonizer_deploy.compiler.scheduling import ScheduleReport
    from harmonizer_deploy.compiler.targets import load_target

    target = load_target("cuda").with_arch("sm_80").tvm_target()
    with target:
        per_function_schedule(report=(schedules := ScheduleReport()))(_fused_module(built / "model.onnx", target))
    functions = schedules.functions
    convs = {name: rule for name, rule in functions.items() if "conv2d" in name}
    assert convs and set(convs.values()) == {"Matmul"}, functions


def test_a_function_no_rule_schedules_is_named(built, tmp_path, monkeypatch):
    """Only the Matmul rule: element-wise kernels (pad, transpose) cannot be scheduled, and compile says which,
    instead of TVM's "Did you forget to bind?" without a name."""
    from harmonizer_deploy.compiler.targets import targets_dir

    tdir = tmp_path / "targets"
    tdir.mkdir()
    for name in ("cpu", "cuda"):
        (tdir / f"{name}.toml").write_text((targets_dir() / f"{name}.toml").read_text())
    toml = (tdir / "cuda.toml").read_text()
    (tdir / "cuda.toml").write_text(toml.replace('executables = ["nvcc"]', "executables = []").replace(
        'schedule_rules = ["Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback"]',
        'schedule_rules = ["Matmul"]'))
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(tdir))
    with pytest.raises(HarmonizerError) as info:
        hd.compile(built / "model.onnx", "cuda", tmp_path / "out", arch="sm_80")
    message = info.value.one_line()
    assert "no GPU schedule for function '" in message and "tried Matmul" in message
    assert "Did you forget to bind?" in message and "schedule_rules" in message
    assert not (tmp_path / "out").exists()


def test_an_unbound_kernel_is_caught_before_the_build():
    """TVM 0.27 builds an unscheduled CUDA kernel without complaint (as host code that would read GPU memory);
    the per-function check refuses it, and accepts the same kernel once dlight's Fallback binds it."""
    import tvm
    from tvm import te
    from tvm.s_tir.dlight import gpu

    from harmonizer_deploy.compiler.gpu.schedule import lowering_problems

    a = te.placeholder((64,), name="a")
    func = te.create_prim_func([a, te.compute((64,), lambda i: a[i] + 1.0, name="b")])
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_80"}, host={"kind": "llvm"})
    assert lowering_problems("add_one", func, target) == ["no loop bound to GPU threads"]
    assert lowering_problems("add_one", gpu.Fallback().apply(func, target, False).mod["main"], target) == []


def test_unknown_schedule_rule_is_one_clear_error():
    from harmonizer_deploy.compiler.gpu.schedule import make_rules

    with pytest.raises(HarmonizerError, match="unknown dlight GPU schedule rule 'Magic'"):
        make_rules(["Matmul", "Magic"])


# --- cuda: build here, run only where there is a GPU ------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_built(tmp_path_factory, built):
    """The tiny model compiled for cuda (nvcc, no GPU needed) next to its cpu artifact."""
    if not HAS_NVCC:
        pytest.skip("nvcc not installed: the cuda target cannot be built here")
    build = tmp_path_factory.mktemp("cuda-build")
    shutil.copytree(built, build, dirs_exist_ok=True)
    for name in ("cpu",):
        manifest_path = build / name / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["model"]["path"] = str(build / "model.onnx")
        manifest_path.write_text(json.dumps(manifest))
    hd.compile(build / "model.onnx", "cuda", build / "cuda", arch="sm_80")
    return build


def test_cuda_artifact_and_deploy_bundle(cuda_built):
    manifest = json.loads((cuda_built / "cuda" / "manifest.json").read_text())
    assert manifest["target_json"] == {"kind": "cuda", "arch": "sm_80"} and manifest["device"] == "cuda"
    assert set(manifest["schedules"]["functions"].values()) <= {"Matmul", "GEMV", "Reduction",
                                                                "GeneralReduction", "Fallback"}
    bundle = cuda_built / "cuda" / "bundle"
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["runtime_libs"][0] == "libtvm_runtime.so" and info["runtime_libs"][-1] == "libtvm_runtime_cuda.so"
    for name in info["runtime_libs"]:
        assert (bundle / "lib" / name).is_file()
    assert not list(bundle.rglob("libtvm_compiler*")) and not list(bundle.rglob("libcuda.so*"))
    summary = manifest["bundle"]
    assert summary["bytes"] == sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert summary["bytes"] < 30e6, "a bundle is a few MB, not the 260 MB compiler"
    assert (bundle / "model.so").read_bytes() == (cuda_built / "cuda" / "model.so").read_bytes()


def test_cuda_compile_reports_bundle_size_and_reuses_cache(cuda_built):
    result = runner.invoke(app, ["compile", str(cuda_built / "model.onnx"), "--target", "cuda", "-o",
                                 str(cuda_built / "cuda"), "--arch", "sm_80"])
    assert result.exit_code == 0, result.output
    text = one_line(result)
    assert "reused cached artifact" in text and "deploy bundle" in text and "MB" in text
    assert "kernel schedules:" in text


def test_verify_and_bench_cuda_exit_4_without_a_gpu_and_pass_with_one(cuda_built):
    result = runner.invoke(app, ["verify", str(cuda_built / "cuda"), "--target", "cuda", "--num-inputs", "1",
                                 "--time", "8"])
    if cuda_present():
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == EXIT_NO_DEVICE, result.output
    text = one_line(result)
    assert "no cuda device on this machine" in text and "NVIDIA GPU" in text and "bundle" in text
    result = runner.invoke(app, ["bench", "--backend", "tvm-cuda", "--build-dir", str(cuda_built), "--repeats",
                                 "1", "--warmup", "0", "--time", "8", "-o", str(cuda_built / "res")])
    assert result.exit_code == EXIT_NO_DEVICE, result.output
    assert not (cuda_built / "res").exists(), "nothing written: no pretend results"


def test_default_bench_leaves_out_and_lists_artifacts_whose_device_is_absent(cuda_built):
    from harmonizer_deploy.benchmark.bench import default_backends, skipped_backends

    names = default_backends(cuda_built)
    assert "tvm-cpu" in names
    if cuda_present():
        assert "tvm-cuda" in names
    else:
        assert "tvm-cuda" not in names
        assert skipped_backends(cuda_built, names) == [{"backend": "tvm-cuda", "reason": "no cuda device here"}]


def test_cuda_bundle_runner_says_no_device(cuda_built):
    if cuda_present():
        proc = run_bundle(cuda_built / "cuda" / "bundle", "verify")
        assert proc.returncode == 0, proc.stderr
        return
    proc = run_bundle(cuda_built / "cuda" / "bundle", "verify")
    assert proc.returncode == EXIT_NO_DEVICE, (proc.returncode, proc.stderr)
    assert "no cuda device on this machine" in proc.stderr


# --- the runtime-only runner, proven on the cpu target ----------------------------------------------------

@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory, built):
    from harmonizer_deploy.compiler.bundle import make_bundle

    out = tmp_path_factory.mktemp("bundles") / "cpu"
    info = make_bundle(built / "cpu", out)
    assert info["runtime_bytes"] < 20e6
    return out


def test_runtime_only_runner_verifies_without_the_compiler(cpu_bundle):
    proc = run_bundle(cpu_bundle, "verify")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and report["max_abs_err"] <= 1e-4 and report["argmax_agreement"] == 1.0
    proc = run_bundle(cpu_bundle, "verify", "--onnxruntime", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["reference"].startswith("onnxruntime CPUExecutionProvider")


def test_runtime_only_runner_matches_the_full_tvm_runtime(cpu_bundle, built, tmp_path):
    from harmonizer_deploy.conversion.inputs import make_inputs
    from harmonizer_deploy.run.tvm import CompiledModel

    inputs = {f"x{i}": x for i, x in enumerate(make_inputs(5, 2, 2, 12))}
    np.savez(tmp_path / "in.npz", **inputs)
    proc = run_bundle(cpu_bundle, "run", str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    model = CompiledModel(built / "cpu")
    with np.load(tmp_path / "out.npz") as out:
        for name, x in inputs.items():
            np.testing.assert_allclose(out[name], model.run(x), rtol=1e-6, atol=1e-7)


def test_runtime_only_runner_bench_and_failed_verify(cpu_bundle, tmp_path):
    proc = run_bundle(cpu_bundle, "bench", "--batch", "1", "--time", "8", "--warmup", "0", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert {r["backend"] for r in rows} >= {"tvm-cpu"} and all(r["min_ms"] > 0 for r in rows)
    broken = tmp_path / "broken"
    shutil.copytree(cpu_bundle, broken)
    with np.load(broken / "params.npz") as data:
        arrays = {k: data[k].copy() for k in data.files}
    (logits,) = [k for k, a in arrays.items() if a.ndim == 4 and a.shape[0] == 4]
    arrays[logits] = -arrays[logits]
    np.savez(broken / "params.npz", **arrays)
    proc = subprocess.run([sys.executable, str(broken / "run.py"), "verify"], capture_output=True, text=True,
                          timeout=300)  # refused by the hash check before anything is loaded (issue 15)
    assert proc.returncode == 2 and "bundle file params.npz is missing or modified" in proc.stderr, proc.stderr
    from harmonizer_deploy.core.artifacts import sha256_file

    info = json.loads((broken / "bundle.json").read_text())  # as if the bundle had been built that way
    info["files"]["params.npz"]["sha256"] = sha256_file(broken / "params.npz")
    (broken / "bundle.json").write_text(json.dumps(info))
    proc = run_bundle(broken, "verify")
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout)["passed"] is False
    runtime = broken / "lib" / "libtvm_runtime.so"  # a damaged runtime library never reaches dlopen either
    runtime.write_bytes(runtime.read_bytes()[:-4096] + b"\xff" * 4096)
    proc = subprocess.run([sys.executable, str(broken / "run.py"), "verify"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "bundle file lib/libtvm_runtime.so is missing or modified" in proc.stderr


def _matmul_onnx(path: Path, inputs: int) -> Path:
    """A non-harmonizer model: x[1,16] @ w (+ y[1,8] when `inputs` is 2), then Relu."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((16, 8), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"])]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])]
    if inputs == 2:
        nodes.append(helper.make_node("Add", ["m", "y"], ["a"]))
        graph_inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]))
    nodes.append(helper.make_node("Relu", [nodes[-1].output[0]], ["z"]))
    graph = helper.make_graph(nodes, "g", graph_inputs, [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("inputs", [1, 2])
def test_cuda_compile_of_any_model_builds_its_bundle_from_the_signature(tmp_path, inputs):
    """The bundle's reference inputs come from the model's signature (a [1,16] input used to get pianorolls and
    exit 70); a model run.py cannot feed (several inputs) gets no bundle and a warning, not a wrong one."""
    if not HAS_NVCC:
        pytest.skip("nvcc not installed: the cuda target cannot be built here")
    onnx_path = _matmul_onnx(tmp_path / "mm.onnx", inputs)
    result = runner.invoke(app, ["compile", str(onnx_path), "--target", "cuda", "-o", str(tmp_path / "out"),
                                 "--arch", "sm_80"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    if inputs == 1:
        reference = np.load(tmp_path / "out" / "bundle" / "reference.npz")
        assert reference["input_0"].shape == (1, 16) and reference["expected_0"].shape == (1, 8)
        assert manifest["bundle"]["dir"] == "bundle"
    else:
        assert manifest["bundle"] is None and not (tmp_path / "out" / "bundle").exists()
        assert "no deploy bundle" in result.stderr
