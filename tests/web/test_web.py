"""The browser targets (webgpu, wasm): WGSL requirements, the 127.0.0.1 server, and real runs in headless Chromium.

Browser tests skip with the reason when Chromium, emscripten or TVM's JS runtime are missing
(scripts/install-web-deps.sh installs them). They use the tiny session model, so they take seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser_env import browser_missing
from harmonizer_deploy.core.errors import HarmonizerError

REPO = Path(__file__).resolve().parents[2]
WGSL = """
@group(0) @binding(0) var<storage, read_write> a : array<f32>;
@group(0) @binding(1) var<storage, read> b : array<f32>;
@group(0) @binding(2) var<uniform> podArgs : PodArgs;
var<workgroup> red_buf : array<f32, 1024>;
@compute @workgroup_size(32, 8, 1)
fn k0() {
  a[0] = b[0];
}

@group(0) @binding(0) var<storage, read_write> c : array<f32>;
@compute @workgroup_size(64)
fn k1() {
  c[0] = 1.0;
}
"""


def test_wgsl_requirements_are_the_per_kernel_maxima():
    from harmonizer_deploy.compiler.web.wgsl import requirements

    req = requirements(WGSL)
    assert req["num_kernels"] == 2
    assert req["limits"]["maxStorageBuffersPerShaderStage"] == 2
    assert req["limits"]["maxUniformBuffersPerShaderStage"] == 1
    assert req["limits"]["maxComputeWorkgroupStorageSize"] == 4096
    assert req["limits"]["maxComputeInvocationsPerWorkgroup"] == 256
    assert req["limits"]["maxComputeWorkgroupSizeY"] == 8
    assert req["limits_above_default"] == {}
    assert req["features"] == []
    big = requirements("enable f16;\nvar<workgroup> s : array<f16, 16384>;\n@compute @workgroup_size(512)\nfn k(){\n}")
    assert big["features"] == ["shader-f16"]
    assert big["limits_above_default"] == {"maxComputeWorkgroupStorageSize": 32768,
                                           "maxComputeInvocationsPerWorkgroup": 512, "maxComputeWorkgroupSizeX": 512}


def test_weight_names_become_identifiers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harmonizer_deploy.compiler.relax_import import with_identifier_weight_names

    w = numpy_helper.from_array(np.ones((2,), np.float32), "conv0/weights:0")
    clash = numpy_helper.from_array(np.ones((2,), np.float32), "conv0_weights_0")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "conv0/weights:0"], ["y0"]), helper.make_node("Add", ["y0", "conv0_weights_0"],
                                                                                    ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [w, clash])
    model = helper.make_model(graph)
    renamed = with_identifier_weight_names(model)
    names = [i.name for i in renamed.graph.initializer]
    assert names[1] == "conv0_weights_0" and names[0] not in ("conv0/weights:0", "conv0_weights_0")
    assert names[0].isidentifier()
    assert renamed.graph.node[0].input[1] == names[0]
    assert model.graph.initializer[0].name == "conv0/weights:0"  # the original is untouched
    onnx.checker.check_model(renamed)


def test_web_targets_are_data():
    from harmonizer_deploy.compiler.cpu.schedule import machine_for
    from harmonizer_deploy.compiler.gpu.schedule import make_rules
    from harmonizer_deploy.compiler.targets import load_target

    webgpu, wasm = load_target("webgpu"), load_target("wasm")
    assert webgpu.export == wasm.export == "wasm" and webgpu.runner == wasm.runner == "browser"
    assert webgpu.host == {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
    assert "+simd128" in wasm.target["mattr"] and wasm.pipeline == "cpu" and not machine_for(wasm.options).parallel
    assert webgpu.options["schedule_rules"] == ["DirectConv2d", "Fallback"] and webgpu.pipeline == "gpu"
    assert webgpu.verify == {"num_inputs": 2, "batch": 1, "time_steps": 8}
    with pytest.raises(HarmonizerError, match="fastest"):
        make_rules(["fastest"])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_server_serves_only_inside_its_folders(tmp_path):
    from harmonizer_deploy.web.server import Job, WebServer

    art = tmp_path / "art"
    art.mkdir()
    (art / "manifest.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("no")
    bundle = tmp_path / "tvmjs.js"
    bundle.write_text("// js")
    job = Job(artifact_url="/artifacts/model/", inputs=[b"\0" * 8], shapes=[[2]])
    with WebServer(bundle, {"model": art}, job) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert _get(f"{server.url}/artifacts/model/manifest.json") == (200, b"{}")
        assert _get(f"{server.url}/artifacts/model/..%2Fsecret.txt")[0] == 404
        assert _get(f"{server.url}/static/..%2F..%2Fserver.py")[0] == 404
        assert _get(f"{server.url}/vendor/tvmjs.js") == (200, b"// js")
        assert _get(f"{server.url}/inputs/0.bin") == (200, b"\0" * 8)
        assert _get(f"{server.url}/inputs/1.bin")[0] == 404
        status, body = _get(f"{server.url}/")
        assert status == 200 and b"Coconet harmonizer" in body
        assert json.loads(_get(f"{server.url}/job.json")[1])["inputs"][0]["shape"] == [2]


def test_serve_needs_a_web_artifact(tmp_path, built):
    from harmonizer_deploy.run.browser import run_job
    from harmonizer_deploy.web.server import page_artifacts

    with pytest.raises(HarmonizerError, match="no web artifact") as info:
        page_artifacts(tmp_path)
    assert "compile --target webgpu" in info.value.one_line()
    with pytest.raises(HarmonizerError, match="not a web artifact"):
        run_job(built / "cpu", [np.zeros((1, 4, 46, 8), np.float32)])


# ---------------------------------------------------------------- real runs in headless Chromium


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@needs_browser
@pytest.mark.parametrize("target", ["wasm", "webgpu"])
def test_compile_and_verify_in_chromium(web_build, target):
    from harmonizer_deploy import verify

    manifest = json.loads((web_build / target / "manifest.json").read_text())
    assert {"model.wasm", "params.bin", "params.json", "params.npz"} <= set(manifest["artifacts"])
    assert manifest["emcc"].startswith("emcc") and manifest["link_seconds"] > 0
    if target == "webgpu":
        assert manifest["webgpu"]["num_kernels"] > 0 and manifest["webgpu"]["limits_above_default"] == {}
    report = verify(web_build / target, target, num_inputs=2, batch=1, time_steps=8)
    assert report.passed, report.outputs
    assert report.outputs[0]["max_abs_err"] <= 1e-4
    assert report.outputs[0]["argmax_agreement"] == 1.0


@needs_browser
def test_wasm_artifact_is_simd_with_hand_schedules_and_lifted_weights(web_build):
    """The wasm target compiles with +simd128 (the disassembly holds f32x4 arithmetic), gets the hand schedules
    (no default loops on the convolutions) and ships the lifted weight transform the page runs once."""
    import subprocess

    manifest = json.loads((web_build / "wasm" / "manifest.json").read_text())
    assert manifest["param_transform"] == "main_transform_params"
    schedules = set(manifest["schedules"]["functions"].values())
    assert {"winograd-row-tasks", "conv2d-nhwc-register-tile"} & schedules, schedules
    wasm_dis = shutil.which("wasm-dis")  # binaryen, installed with emscripten
    if wasm_dis is None:
        pytest.skip("wasm-dis (binaryen, part of Debian's emscripten) is not installed")
    text = subprocess.run([wasm_dis, str(web_build / "wasm" / "model.wasm")], capture_output=True, text=True,
                          timeout=300, check=True).stdout
    simd = sum(text.count(op) for op in ("f32x4.mul", "f32x4.add", "f32x4.fma", "f32x4.relaxed_madd"))
    assert simd >= 100, f"only {simd} f32x4 multiply/add instructions in model.wasm"


@needs_browser
@pytest.mark.parametrize("encoding", ["float16", "uint8"])
def test_smaller_web_weights_verify_at_their_stated_tolerance(web_build, tmp_path, encoding):
    """--web-weights float16/uint8: the page decodes them, verify holds the result to [tolerance.<encoding>]
    and reports the error; the download shrinks by 2x / 4x."""
    from harmonizer_deploy import compile, verify

    out = tmp_path / f"wasm-{encoding}"
    compile(web_build / "model.onnx", "wasm", out, web_weights=encoding)
    manifest = json.loads((out / "manifest.json").read_text())
    full = json.loads((web_build / "wasm" / "params.json").read_text())["total_bytes"]
    assert manifest["web_params"]["encoding"] == encoding
    assert manifest["web_params"]["bytes"] <= full / (2 if encoding == "float16" else 4) + 64
    report = verify(out, "wasm", num_inputs=1, batch=1, time_steps=8)
    atol = report.outputs[0]["atol"]
    assert report.passed and atol == json.loads((out / "manifest.json").read_text())["tolerance"]["atol"]
    assert 0 < report.outputs[0]["max_abs_err"] <= atol


def _check_harmonization(report: dict, melody_steps: list[int | None]) -> None:
    """Four voices of the melody's length; the melody's voice is the melody, rests included; every other voice
    sings at every step, inside its range."""
    voices, ranges = report["voices"], report["ranges"]
    sung = report["voice_names"].index(report["melody_voice"])
    assert len(voices) == 4 and all(len(v) == len(melody_steps) for v in voices)
    assert voices[sung] == melody_steps  # the melody voice is unchanged
    for v, (voice, (low, high)) in enumerate(zip(voices, ranges, strict=True)):
        if v != sung:
            assert all(p is not None and low <= p <= high for p in voice), (voice, low, high)


def _bundled_melody(index: int) -> list[int | None]:
    data = json.loads((REPO / "src/harmonizer_deploy/web/static/melodies.json").read_text())
    return [p for p, d in data["melodies"][index]["notes"] for _ in range(d)]


@needs_browser
@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_page_harmonizes_a_bundled_melody(web_build, backend):
    from harmonizer_deploy.run.browser import run_page

    shots = Path(os.environ.get("HARMONIZER_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
    shot = shots / f"page-{backend}.png"
    report = run_page(web_build, melody=0, steps=4, backend=backend, screenshot=shot, timeout_s=240)
    assert report["backend"] == backend and report["steps"] == 4
    assert report["melody"] == _bundled_melody(0)
    _check_harmonization(report, _bundled_melody(0))
    assert report["stop_button"] == {"enabled_while_playing": True, "stopped": True}  # Play, then Stop
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_onnxruntime_web_peer_runs_the_same_model_cross_origin_isolated(web_build):
    """onnxruntime-web (the pinned npm package) runs the same model.onnx in the same Chromium, with 1 thread and
    with 2 (the server makes the page cross-origin isolated, so wasm threads are allowed), and agrees with
    native onnxruntime."""
    from harmonizer_deploy.run.browser import ort_web_bench
    from harmonizer_deploy.web.jsdeps import ort_web_dist

    try:
        ort_web_dist(install=False)
    except HarmonizerError as exc:
        pytest.skip(f"{exc.problem}: run scripts/install-web-deps.sh")
    for threads in (1, 2):
        row = ort_web_bench(web_build / "model.onnx", ep="wasm", threads=threads, batch=1, time_steps=8, warmup=0,
                            repeats=2)
        assert row["backend"] == f"ort-web-wasm-{threads}t" and row["threads"] == threads
        assert row["cross_origin_isolated"] is True
        assert row["max_abs_err_vs_onnxruntime"] < 1e-4 and row["p50_ms"] > 0


def test_browser_bench_row(web_build):
    from harmonizer_deploy.run.browser import browser_bench

    row = browser_bench(web_build / "wasm", batch=1, time_steps=8, warmup=1, repeats=3)
    assert row["backend"] == "tvm-wasm" and row["device"] == "cpu"
    assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] and row["load_ms"] > 0 and row["first_run_ms"] > 0


@needs_browser
def test_bench_includes_browser_rows(web_build, tmp_path):
    from harmonizer_deploy.benchmark.bench import bench

    result = bench(["onnxruntime", "tvm-wasm"], time_steps=8, warmup=0, repeats=1, build_dir=web_build,
                   out_dir=tmp_path)
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["tvm-wasm"]["where"] == "headless Chromium" and rows["tvm-wasm"]["p50_ms"] > 0
    assert "tvm-wasm (headless Chromium" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("emcc") is None, reason="emscripten (emcc) is not installed: "
                    "run scripts/install-web-deps.sh")
def test_web_runtime_builds_from_the_project_headers(tmp_path):
    """TVM's web runtime compiles from the wheel's sources plus tvm_web_headers/ alone (~1 min on 2 cores)."""
    from harmonizer_deploy.compiler.web.toolchain import RUNTIME_SOURCES, build_runtime_objects

    seconds = build_runtime_objects(tmp_path)
    for name in RUNTIME_SOURCES:
        obj = tmp_path / "web" / "dist" / "wasm" / f"{name}.bc"
        assert obj.read_bytes()[:4] == b"\0asm", name  # a wasm object file
        assert seconds[name] > 0


@needs_browser
def test_page_prefers_wasm_over_a_software_webgpu_adapter(web_build):
    """Headless Chromium without a GPU offers SwiftShader: the page picks wasm (threaded when that artifact is built
    and the page is isolated) by itself and says why."""
    from harmonizer_deploy.run.browser import run_page

    report = run_page(web_build, melody=1, steps=2, timeout_s=240)
    if "software renderer" not in report["status"]:
        pytest.skip(f"this machine has a hardware WebGPU adapter ({report['status']})")
    built = sorted(p.name for p in Path(web_build).iterdir() if (p / "manifest.json").is_file())
    assert report["backend"] == ("wasm-mt" if "wasm-mt" in built else "wasm"), (report["backend"], built)
    _check_harmonization(report, _bundled_melody(1))


@needs_browser
def test_serve_reports_a_busy_port_in_one_line(web_build):
    import socket

    from harmonizer_deploy.web.server import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(HarmonizerError, match=r"cannot listen on 127\.0\.0\.1") as info:
            serve(web_build, busy.getsockname()[1])
    assert "--port" in info.value.fix
    server = serve(web_build, 0)
    try:
        # the web artifacts built in the folder (other tests may add wasm-mt to the shared one)
        built = sorted(p.name for p in Path(web_build).iterdir() if (p / "manifest.json").is_file())
        assert {"wasm", "webgpu"} <= set(server.artifacts) and sorted(server.artifacts) == [
            name for name in built if name in ("wasm", "wasm-mt", "webgpu")]
    finally:
        server.httpd.server_close()
