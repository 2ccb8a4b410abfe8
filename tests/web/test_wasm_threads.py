"""The threaded wasm target (`wasm-mt`): a shared-memory module with atomics, our worker pool linked in place of
TVM's serial parallel launch, two threads in a cross-origin isolated Chromium page, one thread (and the reason)
when the page is not isolated. Browser tests skip with the reason when Chromium, emscripten or tvmjs are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from browser_env import browser_missing

needs_browser = pytest.mark.skipif(browser_missing(page=False) is not None,
                                   reason=str(browser_missing(page=False)))


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _name(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _leb128(data, pos)
    return data[pos:pos + size].decode(), pos + size


def wasm_memory_and_exports(path: Path) -> tuple[dict[str, dict], set[str]]:
    """The module's memory imports ({"env.memory": {shared, initial, maximum}}) and its export names, read from
    the binary's import and export sections (so the test does not trust any tool that wrote it)."""
    data = path.read_bytes()
    assert data[:4] == b"\0asm", f"{path} is not a wasm module"
    pos, memories, exports = 8, {}, set()
    while pos < len(data):
        section, pos = data[pos], pos + 1
        size, pos = _leb128(data, pos)
        end = pos + size
        if section == 2:  # imports
            count, p = _leb128(data, pos)
            for _ in range(count):
                module, p = _name(data, p)
                field, p = _name(data, p)
                kind, p = data[p], p + 1
                if kind == 0:  # function: type index
                    _, p = _leb128(data, p)
                elif kind == 1:  # table: reftype + limits
                    flags = data[p + 1]
                    p += 2
                    _, p = _leb128(data, p)
                    if flags & 1:
                        _, p = _leb128(data, p)
                elif kind == 2:  # memory: limits (bit 0: has maximum, bit 1: shared)
                    flags, p = data[p], p + 1
                    initial, p = _leb128(data, p)
                    maximum = None
                    if flags & 1:
                        maximum, p = _leb128(data, p)
                    memories[f"{module}.{field}"] = {"shared": bool(flags & 2), "initial": initial,
                                                     "maximum": maximum}
                elif kind == 3:  # global: valtype + mutability
                    p += 2
                else:
                    raise AssertionError(f"unknown import kind {kind}")
        elif section == 7:  # exports
            count, p = _leb128(data, pos)
            for _ in range(count):
                field, p = _name(data, p)
                _, p = _leb128(data, p + 1)
                exports.add(field)
        pos = end
    return memories, exports


@pytest.fixture(scope="session")
def web_wasm_mt(built) -> Path:
    """The tiny session model compiled for wasm-mt (next to its cpu artifact)."""
    from harmonizer_deploy import compile

    out = built / "wasm-mt"
    if not (out / "manifest.json").is_file():
        compile(built / "model.onnx", "wasm-mt", out)
    return out


def test_wasm_mt_target_is_the_wasm_target_with_threads():
    """Same pipeline, export and tolerances as `wasm`; atomics and bulk memory added to SIMD128; parallel tiles."""
    from harmonizer_deploy.compiler.cpu.schedule import WASM_SIMD128, machine_for
    from harmonizer_deploy.compiler.targets import load_target

    one, many = load_target("wasm"), load_target("wasm-mt")
    assert (many.pipeline, many.export, many.runner, many.device) == (one.pipeline, one.export, one.runner,
                                                                     one.device)
    assert many.target["mattr"] == [*one.target["mattr"], "+atomics", "+bulk-memory"]
    assert (many.atol, many.rtol, many.weight_tolerances) == (one.atol, one.rtol, one.weight_tolerances)
    assert "threads" not in one.options and many.options["threads"] >= 2
    assert machine_for(one.options) is WASM_SIMD128 and not WASM_SIMD128.parallel
    threaded = machine_for(many.options)
    assert threaded.parallel and threaded.lanes == WASM_SIMD128.lanes
    assert threaded.channel_tile == WASM_SIMD128.channel_tile


@needs_browser
def test_threaded_model_wasm_has_shared_memory_atomics_and_the_pool(web_wasm_mt):
    """model.wasm imports a shared memory with a maximum, exports the pool's entry points, and its code holds
    the pool's wait/notify and atomic read-modify-writes; the kernels call our TVMBackendParallelLaunch."""
    manifest = json.loads((web_wasm_mt / "manifest.json").read_text())
    threads = manifest["threads"]
    memories, exports = wasm_memory_and_exports(web_wasm_mt / "model.wasm")
    assert memories == {"env.memory": {"shared": True, "initial": threads["memory_initial_pages"],
                                       "maximum": threads["memory_maximum_pages"]}}
    assert {"hd_worker_main", "hd_worker_stack", "hd_num_threads", "stackRestore", "_initialize"} <= exports
    assert "memory" not in exports  # imported, not exported: the page and every worker share one
    wasm_dis = shutil.which("wasm-dis")  # binaryen, installed with emscripten
    if wasm_dis is None:
        pytest.skip("wasm-dis (binaryen, part of Debian's emscripten) is not installed")
    text = subprocess.run([wasm_dis, str(web_wasm_mt / "model.wasm")], capture_output=True, text=True,
                          timeout=300, check=True).stdout
    assert text.count("memory.atomic.wait32") >= 1 and text.count("memory.atomic.notify") >= 1
    assert text.count(".atomic.rmw") >= 5, "too few atomic read-modify-writes for a thread pool"
    assert text.count("call $TVMBackendParallelLaunch") >= 3, "the kernels have no parallel loops"
    # the one-thread `wasm` target stays a plain, unshared module
    single = web_wasm_mt.parent / "wasm" / "model.wasm"
    if single.is_file():
        memories, exports = wasm_memory_and_exports(single)
        assert memories == {} and "memory" in exports and "hd_worker_main" not in exports


@needs_browser
@pytest.mark.slow
def test_threaded_artifact_runs_on_two_threads_and_matches_onnxruntime(web_wasm_mt):
    """In a cross-origin isolated page, one worker joins the page's thread (2 threads, as reported by the
    runtime's own count), and the outputs match onnxruntime at the target's tolerance."""
    from harmonizer_deploy.core.onnxruntime import ort_session
    from harmonizer_deploy.music.encoding import realistic_inputs
    from harmonizer_deploy.run.browser import run_job

    session = ort_session(web_wasm_mt.parent / "model.onnx")
    x = realistic_inputs(3, 1, 16)
    result = run_job(web_wasm_mt, [x], warmup=1, repeats=3, threads=2)
    assert result.report["crossOriginIsolated"] is True
    assert result.report["threads"] == 2, result.report.get("threadsReason")
    assert result.report["threadsReason"] is None
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(result.outputs[0], expected, atol=1e-4, rtol=1e-4)


@needs_browser
@pytest.mark.slow
def test_threaded_artifact_falls_back_to_one_thread_with_the_reason_when_not_isolated(web_wasm_mt):
    """Without COOP/COEP no worker can get the shared memory: the artifact still runs, on the page's thread
    alone, and the report says why (and still matches onnxruntime)."""
    from harmonizer_deploy.core.onnxruntime import ort_session
    from harmonizer_deploy.music.encoding import realistic_inputs
    from harmonizer_deploy.run.browser import run_job

    session = ort_session(web_wasm_mt.parent / "model.onnx")
    x = realistic_inputs(4, 1, 8)
    result = run_job(web_wasm_mt, [x], threads=2, isolate=False)
    assert result.report["crossOriginIsolated"] is False
    assert result.report["threads"] == 1
    assert result.report["threadsReason"] == "not cross-origin isolated: SharedArrayBuffer unavailable"
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(result.outputs[0], expected, atol=1e-4, rtol=1e-4)


@needs_browser
@pytest.mark.slow
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_page_picks_threaded_wasm_when_isolated_and_says_so(web_wasm_mt, web_wasm):
    """The page, offered wasm-mt and wasm (no webgpu build), loads wasm-mt in the cross-origin isolated page,
    harmonizes on 2 threads and says so in its status line."""
    from harmonizer_deploy.run.browser import run_page

    artifacts = {"wasm-mt": web_wasm_mt, "wasm": web_wasm / "wasm"}
    report = run_page(web_wasm, melody=0, steps=2, artifacts=artifacts, timeout_s=240)
    assert report["backend"] == "wasm-mt"
    assert "WebAssembly threads: 2 (cross-origin isolated)." in report["status"], report["status"]
    assert report["status"].startswith("WebGPU unavailable (no webgpu build on the server)")
