"""One interface over every way to run the harmonizer: TensorFlow, onnxruntime, OpenVINO and each TVM artifact.

`open_backend("tvm-cpu")` etc. Bench, verify and the sampler all use this, so adding a backend is one place.
Each backend can also say how it ended up configured (`runtime_settings()`: threads and precision read back from
the runtime), so a benchmark records what ran, not what was asked for.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.encoding import INPUT_NAME, OUTPUT_NAME

DEFAULT_BUILD_DIR = Path("build")
PEERS_EXTRA = "pip install 'harmonizer-deploy[peers]'"
OPENVINO_PRECISIONS = {"openvino": "f32", "openvino-bf16": "bf16"}


class PeerUnavailable(HarmonizerError):
    """A peer runtime (OpenVINO, ...) cannot run this model here: bench skips its row with this reason."""


class PeerMissing(PeerUnavailable):
    """The peer is only an optional extra and is not installed (the fix names the extra)."""


class Backend(Protocol):
    name: str

    def run(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class OnnxRuntimeBackend:
    """onnxruntime with its worker threads parked between calls (no spin-waiting).

    Why: by default ORT's idle workers spin on every core for a while after each call. Measured here (2 cores,
    interleaved with a TVM artifact): the TVM call right after an ORT call took 35 ms instead of 3.4 ms, while
    ORT's own latency was the same either way (3.17 ms). Parking keeps one backend from taxing the next one.
    """

    onnx_path: Path
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    name: str = "onnxruntime"
    threads: int | None = None  # intra-op threads; None: onnxruntime's default (one per physical core)

    def __post_init__(self) -> None:
        from harmonizer_deploy.conversion.convert import check_onnx_file
        from harmonizer_deploy.core.onnxruntime import ort_session

        check_onnx_file(Path(self.onnx_path))
        self.session = ort_session(self.onnx_path, providers=self.providers, spinning=False, threads=self.threads)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, dtype=np.float32)})[0]

    def runtime_settings(self) -> dict:
        """Intra-op threads as the session holds them (0 = onnxruntime's default: one per physical core)."""
        import onnxruntime as ort

        from harmonizer_deploy.core.cpus import physical_cores

        threads = self.session.get_session_options().intra_op_num_threads
        return {"threads": threads or physical_cores(), "threads_source": "session intra_op_num_threads"
                + ("" if threads else " = 0 (default: physical cores)"), "precision": "f32",
                "versions": {"onnxruntime": ort.__version__}}


class TensorFlowBackend:
    name = "tensorflow"

    def __init__(self, model: str | Path | None = None, threads: int | None = None) -> None:
        from harmonizer_deploy.conversion.source import load_source

        if threads is not None:
            import tensorflow as tf

            # only possible before TensorFlow's runtime starts; runtime_settings() then tells the truth
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(threads)
        self.source = load_source(model)
        self.model_path = model

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.source.run(np.asarray(x, dtype=np.float32))[OUTPUT_NAME]

    def runtime_settings(self) -> dict:
        """Intra-op threads as TensorFlow reports them (0 = its default: one per logical CPU), and which model
        it ran (the hash when that is one file)."""
        import tensorflow as tf

        from harmonizer_deploy.core.artifacts import sha256_file

        threads = tf.config.threading.get_intra_op_parallelism_threads()
        path = Path(self.model_path) if self.model_path is not None else None
        return {"threads": threads or len(os.sched_getaffinity(0)), "threads_source": "tf intra_op_parallelism"
                + ("" if threads else " = 0 (default: logical CPUs)"), "precision": "f32",
                "versions": {"tensorflow": tf.__version__}, "model": str(path) if path else "bundled",
                "artifact_sha256": {path.name: sha256_file(path)} if path is not None and path.is_file() else {}}


class OpenVinoBackend:
    """OpenVINO's CPU plugin on the same model.onnx, at a stated precision.

    Why the explicit precision: on a CPU with AVX512-BF16 OpenVINO silently runs in bf16 by default (issue 25
    measured 1.5e-2 max abs error against onnxruntime that way), not a like-for-like comparison with f32 runtimes.
    """

    def __init__(self, onnx_path: Path, precision: str = "f32", threads: int | None = None,
                 name: str = "openvino") -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise PeerMissing(f"{name} needs OpenVINO, which is not installed ({e})", PEERS_EXTRA) from e
        from harmonizer_deploy.conversion.convert import check_onnx_file

        check_onnx_file(Path(onnx_path))
        self.name = name
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        except RuntimeError as e:  # a model OpenVINO cannot read or compile: its limitation, not the user's input
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise PeerUnavailable(f"OpenVINO cannot compile {onnx_path}: {first}",
                                  "bench the other backends (leave out --backend openvino)") from e
        self.request = self.compiled.create_infer_request()
        self.version = ov.get_version().split("-")[0]  # "2026.4.1-22982-<hash>-releases/..." → "2026.4.1"

    def run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({INPUT_NAME: np.asarray(x, dtype=np.float32)})
        return np.array(self.request.get_tensor(OUTPUT_NAME).data)

    def runtime_settings(self) -> dict:
        """Threads and precision as the compiled model reports them."""
        precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        short = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
        return {"threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                "threads_source": "compiled model INFERENCE_NUM_THREADS",
                "precision": next((v for k, v in short.items() if k in precision), precision),
                "versions": {"openvino": self.version}}


class TvmBackend:
    """A compiled artifact; named `tvm-<artifact dir>` (build/cpu → tvm-cpu, build/cpu-b1 → tvm-cpu-b1)."""

    def __init__(self, artifact_dir: Path) -> None:
        from harmonizer_deploy.run.tvm import CompiledModel

        self.model = CompiledModel(artifact_dir)
        self.name = f"tvm-{Path(artifact_dir).name}"
        self.accepts = self.model.accepts

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)

    def runtime_settings(self) -> dict:
        """Workers of TVM's thread pool for this thread (started by the first run; TVM_NUM_THREADS sizes it)."""
        import tvm
        import tvm_ffi

        return {"threads": int(tvm.runtime.num_threads()), "threads_source": "tvm.runtime.num_threads()",
                "precision": "f32", "versions": {"tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__},
                "artifact_sha256": {f: a["sha256"] for f, a in self.model.manifest.get("artifacts", {}).items()}}


def set_tvm_threads(threads: int) -> None:
    """Size TVM's CPU pool: TVM_NUM_THREADS is read when the pool starts, and an already started pool of this
    thread is reconfigured (runtime.config_threadpool) so the count holds either way."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import sys

    if "tvm" in sys.modules:
        import tvm

        if tvm.runtime.num_threads() != threads:
            tvm.get_global_func("runtime.config_threadpool")(1, threads)


def backend_signature(backend: Backend) -> tuple[list[dict], int]:
    """(inputs as {name, shape}, number of outputs) of an opened backend, whatever it runs."""
    if isinstance(backend, TensorFlowBackend):
        return [sig.to_dict() for sig in backend.source.inputs], len(backend.source.outputs)
    if isinstance(backend, OnnxRuntimeBackend):
        return ([{"name": i.name, "shape": list(i.shape)} for i in backend.session.get_inputs()],
                len(backend.session.get_outputs()))
    if isinstance(backend, TvmBackend):
        return list(backend.model.manifest.get("inputs", [])), len(backend.model.manifest.get("outputs", []) or [1])
    return [{"name": INPUT_NAME, "shape": [None, None, 46, 8]}], 1


def open_harmonizer(name: str, build_dir: str | Path, model: str | Path | None, command: str,
                    fix: str | None = None, threads: int | None = None) -> Backend:
    """`open_backend` for the music commands (and bench, which times the pianoroll input): refuses, in one line,
    a model without the harmonizer's signature."""
    from harmonizer_deploy.conversion.inputs import is_harmonizer_io

    backend = open_backend(name, build_dir, model, threads=threads)
    inputs, outputs = backend_signature(backend)
    if not is_harmonizer_io(inputs) or outputs != 1:
        takes = ", ".join(f"{i['name']}{list(i['shape'])}" for i in inputs)
        raise HarmonizerError(
            f"`{command}` needs the harmonizer (one input {INPUT_NAME}[batch, time, 46, 8] → {OUTPUT_NAME}); "
            f"the {backend.name} model takes {takes} and has {outputs} output(s)",
            fix or "use convert/compile/verify for this model; harmonize with a Coconet model (bundled, a .keras "
            "built from a model config, or its build directory)",
        )
    return backend


def onnxruntime_cuda_available() -> bool:
    """onnxruntime-gpu installed *and* an NVIDIA GPU present (the provider is listed even without one)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    from harmonizer_deploy.run.tvm import device_present

    return device_present("cuda")


def source_of_onnx(onnx_path: Path) -> str | None:
    """The TensorFlow model an ONNX file was converted from, per its sidecar (None if unknown)."""
    sidecar = onnx_path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    path = json.loads(sidecar.read_text()).get("source", {}).get("path", "")
    return path.removeprefix("bundled:") or None


def built_tvm_targets(build_dir: Path = DEFAULT_BUILD_DIR) -> list[str]:
    """Artifact directories under build_dir (each `build/<name>/manifest.json`; usually named after the target)."""
    return sorted(p.parent.name for p in Path(build_dir).glob("*/manifest.json"))


def open_backend(name: str, build_dir: str | Path = DEFAULT_BUILD_DIR, model: str | Path | None = None,
                 threads: int | None = None) -> Backend:
    """Open a backend by report name: tensorflow, onnxruntime, openvino, openvino-bf16, or tvm-<artifact dir
    under build_dir>. `threads` sets the intra-op thread count of whichever runtime it is (None: its default)."""
    build_dir = Path(build_dir)
    onnx_path = build_dir / "model.onnx"
    if threads is not None and threads < 1:
        raise HarmonizerError(f"--threads must be >= 1, got {threads}", "pass a positive thread count")
    if name == "tensorflow":
        return TensorFlowBackend(model if model is not None else source_of_onnx(onnx_path), threads)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, threads=threads)
    if name in OPENVINO_PRECISIONS:
        return OpenVinoBackend(onnx_path, OPENVINO_PRECISIONS[name], threads, name)
    if name == "onnxruntime-cuda":
        if not onnxruntime_cuda_available():
            from harmonizer_deploy.core.errors import DeviceUnavailable

            raise DeviceUnavailable("onnxruntime's CUDA provider needs onnxruntime-gpu and an NVIDIA GPU",
                                    "pip install onnxruntime-gpu on a GPU machine, or bench --backend onnxruntime")
        return OnnxRuntimeBackend(onnx_path, ("CUDAExecutionProvider", "CPUExecutionProvider"), "onnxruntime-cuda",
                                  threads)
    if name.startswith("tvm-"):
        if threads is not None:
            set_tvm_threads(threads)
        return TvmBackend(build_dir / name.removeprefix("tvm-"))
    raise HarmonizerError(
        f"unknown backend {name!r}",
        "use tensorflow, onnxruntime, onnxruntime-cuda, openvino, openvino-bf16 or tvm-<dir> for an artifact "
        "compiled into build/<dir>",
    )


FIXED_BACKENDS = ("tensorflow", "onnxruntime", "onnxruntime-cuda", *OPENVINO_PRECISIONS)


def backend_names(build_dir: str | Path = DEFAULT_BUILD_DIR) -> list[str]:
    """Every valid backend name: the fixed ones, tvm-<target> for each target and tvm-<dir> for each artifact
    already compiled into build_dir (e.g. tvm-cpu-b1)."""
    from harmonizer_deploy.compiler.targets import available_targets

    tvm = dict.fromkeys([*available_targets(), *built_tvm_targets(Path(build_dir))])
    return [*FIXED_BACKENDS, *(f"tvm-{t}" for t in tvm)]


def check_backend_name(name: str, build_dir: str | Path = DEFAULT_BUILD_DIR) -> None:
    """Refuse an unknown backend name before any work starts, listing the valid ones."""
    valid = backend_names(build_dir)
    if name not in valid and not re.fullmatch(r"ort-web-(wasm-[1-9][0-9]?t|webgpu)", name):
        raise HarmonizerError(f"unknown backend {name!r}", f"valid backends: {', '.join(valid)} (tvm-<dir> for an "
                              f"artifact compiled into {Path(build_dir)}/<dir>; `harmonizer-deploy backends` "
                              "says which can run here)")


def target_can_run(device: str, runner: str) -> tuple[bool, str]:
    """Whether this machine can run an artifact of `device` with `runner` (local TVM runtime or a browser)."""
    if runner == "browser":
        from harmonizer_deploy.web.browser import chromium_path

        try:
            return True, f"in headless Chromium ({chromium_path()})"
        except HarmonizerError as exc:
            return False, exc.problem
    from harmonizer_deploy.run.tvm import device_present

    if device_present(device):
        return True, f"{device} device 0 present"
    return False, f"no {device} device here"


def backend_status(build_dir: str | Path = DEFAULT_BUILD_DIR) -> list[dict]:
    """One row per backend name: whether it can run here, whether its files are built yet, and why not."""
    from harmonizer_deploy.compiler.targets import available_targets, load_target
    from harmonizer_deploy.core.extras import install_hint, installed

    build_dir = Path(build_dir)
    onnx_built = (build_dir / "model.onnx").is_file()
    rows = [
        {"name": "tensorflow", "can_run": installed("tensorflow"),
         "detail": "TensorFlow installed" if installed("tensorflow") else f"needs {install_hint('convert')}",
         "built": True},
        {"name": "onnxruntime", "can_run": True, "detail": "CPU execution provider", "built": onnx_built},
    ]
    cuda = onnxruntime_cuda_available()
    rows.append({"name": "onnxruntime-cuda", "can_run": cuda, "built": onnx_built,
                 "detail": "CUDA execution provider and a GPU" if cuda else "needs onnxruntime-gpu and an NVIDIA GPU"})
    for name, precision in OPENVINO_PRECISIONS.items():
        ready = installed("openvino")
        rows.append({"name": name, "can_run": ready, "built": onnx_built,
                     "detail": f"OpenVINO CPU, {precision}" if ready else f"needs {install_hint('peers')}"})
    built = set(built_tvm_targets(build_dir))
    for target in available_targets():
        spec = load_target(target)
        ok, why = target_can_run(spec.device, spec.runner)
        rows.append({"name": f"tvm-{target}", "can_run": ok, "detail": why, "built": target in built})
    for artifact in sorted(built - set(available_targets())):
        try:
            manifest = json.loads((build_dir / artifact / "manifest.json").read_text())
            ok, why = target_can_run(str(manifest.get("device", "cpu")), str(manifest.get("runner", "local")))
        except (OSError, ValueError, AttributeError) as exc:
            ok, why = False, f"unreadable manifest.json ({exc})"
        rows.append({"name": f"tvm-{artifact}", "can_run": ok, "detail": why, "built": True})
    return rows
