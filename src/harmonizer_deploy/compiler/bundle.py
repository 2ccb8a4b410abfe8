"""Deploy bundles: what to copy to a GPU box to verify and bench an artifact there without the TVM compiler.

A bundle holds the compiled library, params, manifest, the ONNX model with onnxruntime outputs for seeded
inputs (computed here, at compile time), the TVM *runtime* libraries from the installed wheel
(libtvm_runtime*.so, a few MB — not the 260 MB libtvm_compiler.so) and `run.py` (bundle_runner.py), which
needs only numpy and apache-tvm-ffi.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.conversion.inputs import make_feeds
from harmonizer_deploy.core.artifacts import atomic_dir, check_output_dir, sha256_file
from harmonizer_deploy.core.errors import HarmonizerError

BUNDLE_FORMAT = 2  # part of compile's cache key: a bundle layout change rebuilds cached artifacts
BUNDLE_DIR = "bundle"
BUNDLE_JSON = "bundle.json"
RUNNER = Path(__file__).with_name("bundle_runner.py")
ORT_SESSION = Path(__file__).parents[1] / "core" / "onnxruntime.py"
# Runtime libraries per device: the core runtime (Relax VM included) plus the device's own, where the wheel
# splits it out. A device library that the wheel folds into libtvm_runtime.so is simply not found and skipped.
RUNTIME_LIBS = {"cuda": ["libtvm_runtime_cuda.so"], "vulkan": ["libtvm_runtime_vulkan.so"],
                "rocm": ["libtvm_runtime_rocm.so"]}
TOOLKIT_RUNTIMES = ("libcudart.so",)
REFERENCE_INPUTS = 2


def tvm_runtime_dir() -> Path:
    """The folder of the installed TVM's libtvm_runtime.so (apache-tvm: tvm/lib; mlc-ai builds: tvm/)."""
    import tvm

    root = Path(tvm.__file__).resolve().parent
    for candidate in (root / "lib", root):
        if (candidate / "libtvm_runtime.so").is_file():
            return candidate
    raise HarmonizerError(f"libtvm_runtime.so not found under {root}", "reinstall apache-tvm==0.27.0.post1")


def runtime_libs(device: str, lib_dir: Path | None = None) -> list[Path]:
    """The libraries a bundle ships, in load order: libtvm_runtime.so, then for a GPU device the toolkit
    runtime its TVM library links (libcudart.so.13: redistributable, so the box needs only the NVIDIA
    driver) and TVM's device runtime. The driver itself (libcuda.so.1) is never shipped."""
    lib_dir = lib_dir or tvm_runtime_dir()
    libs = [lib_dir / "libtvm_runtime.so"]
    for name in RUNTIME_LIBS.get(device, []):
        if (lib_dir / name).is_file():
            libs += [dep for dep in _linked(lib_dir / name, TOOLKIT_RUNTIMES) if dep.name not in {x.name for x in libs}]
            libs.append(lib_dir / name)
    return libs


def _linked(library: Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Libraries `library` links whose names start with `prefixes`, where this machine resolves them."""
    try:
        text = subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" => ")
        path = rest.split(" (")[0].strip()
        if name.startswith(prefixes) and path.startswith("/"):
            found.append(Path(path))  # copied under this name, the one the TVM library asks for
    return found


def _ffi_version() -> str:
    try:
        return version("apache-tvm-ffi")
    except PackageNotFoundError:
        return "unknown"


def make_bundle(artifact_dir: str | Path, output: str | Path | None = None) -> dict[str, Any]:
    """A bundle of an existing artifact (any target), written atomically to `output` (default
    `<artifact_dir>/bundle`); compile writes one itself for targets with `[options] bundle = true`."""
    from harmonizer_deploy.core.manifest import verified_manifest

    artifact_dir = Path(artifact_dir)
    destination = Path(output) if output else artifact_dir / BUNDLE_DIR
    if destination.resolve() in (artifact_dir.resolve(), *artifact_dir.resolve().parents):
        raise HarmonizerError(f"bundle output {destination} would replace the artifact {artifact_dir} itself",
                              "choose a new directory with -o/--output")
    check_output_dir(destination)  # before any work: never replace a folder holding anything but our bundle
    manifest = verified_manifest(artifact_dir)
    onnx_path = Path(manifest["model"]["path"])
    if not onnx_path.is_file() or sha256_file(onnx_path) != manifest["model"]["sha256"]:
        raise HarmonizerError(f"the ONNX model of {artifact_dir} is missing or changed: {onnx_path}",
                              "re-run convert and compile")
    with atomic_dir(destination) as tmp:
        return write_bundle(artifact_dir, manifest, onnx_path, tmp)


def bundle_unsupported(manifest: dict) -> str | None:
    """Why the deploy bundle cannot carry this artifact (None: it can). run.py feeds one named input and checks
    the first output against the reference, so a model with several inputs gets no bundle rather than a wrong one."""
    count = len(manifest.get("inputs", []))
    if count != 1:
        return f"the deploy bundle's run.py feeds one input; this model has {count}"
    return None


def write_bundle(artifact_dir: Path, manifest: dict, onnx_path: Path, out: Path) -> dict[str, Any]:
    """Fill the (new or empty) folder `out` with the bundle of the artifact in `artifact_dir`; its summary."""
    from harmonizer_deploy.core.onnxruntime import ort_session

    (out / "lib").mkdir(parents=True, exist_ok=True)
    for name in (manifest["library"], "params.npz", "manifest.json"):
        shutil.copy2(artifact_dir / name, out / name)
    shutil.copy2(onnx_path, out / "model.onnx")
    shutil.copy2(RUNNER, out / "run.py")
    shutil.copy2(ORT_SESSION, out / "ort_session.py")
    libs = runtime_libs(manifest["device"])
    for lib in libs:
        shutil.copy2(lib, out / "lib" / lib.name)

    static = manifest.get("static_shape") or [1, 16]
    input_name = manifest["inputs"][0]["name"]
    # seeded from the model's own signature (the harmonizer's gets its pianorolls): any single-input model
    inputs = [feed[input_name] for feed in make_feeds(manifest["inputs"], 0, REFERENCE_INPUTS, static[0], static[1])]
    session = ort_session(onnx_path)
    reference = {}
    for i, x in enumerate(inputs):
        reference[f"input_{i}"] = x
        reference[f"expected_{i}"] = session.run(None, {input_name: x})[0]
    np.savez(out / "reference.npz", **reference)
    (out / "requirements.txt").write_text(
        f"# run.py needs only these (not apache-tvm): the TVM runtime is in lib/\napache-tvm-ffi=={_ffi_version()}\n"
        f"numpy\n# optional: a live onnxruntime comparison and onnxruntime timings\n# onnxruntime-gpu\n")

    info = {
        "format_version": BUNDLE_FORMAT, "target": manifest["target"], "backend": manifest["backend"],
        "device": manifest["device"], "target_json": manifest["target_json"], "library": manifest["library"],
        "params": "params.npz", "onnx": "model.onnx", "reference": "reference.npz", "input_name": input_name,
        "static_shape": manifest.get("static_shape"), "tolerance": manifest["tolerance"],
        "runtime_libs": [lib.name for lib in libs], "versions": manifest["versions"],
        # run.py checks what it loads against these before loading anything
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                  for p in sorted(out.rglob("*")) if p.is_file()},
    }
    (out / BUNDLE_JSON).write_text(json.dumps(info, indent=2) + "\n")
    files = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(out.rglob("*")) if p.is_file()}
    total = sum(f["bytes"] for f in files.values())
    runtime = sum(files[f"lib/{lib.name}"]["bytes"] for lib in libs)
    return {"dir": BUNDLE_DIR, "bytes": total, "runtime_bytes": runtime, "files": files,
            "run": f"python {BUNDLE_DIR}/run.py verify"}
