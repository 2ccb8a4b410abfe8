"""Build what a command needs on first use: the ONNX model and the compiled artifact a backend runs.

Why: `harmonize --backend tvm-cpu`, `bench` and `verify` on a fresh checkout used to stop at "run `convert`
first"; users expect the tool to build what it needs. Only what is missing is built (an existing model.onnx or
artifact is never rebuilt or replaced here, so a tuned or static-shape artifact stays as the user compiled it),
and each build is logged at INFO on the `harmonizer_deploy` logger (the CLI prints it on stderr; -q hides it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.extras import require
from harmonizer_deploy.run.backends import DEFAULT_BUILD_DIR, built_tvm_targets, source_of_onnx

log = logging.getLogger(__name__)


def ensure_onnx(build_dir: str | Path = DEFAULT_BUILD_DIR, model: str | Path | None = None) -> Path:
    """`build_dir/model.onnx`, converted from `model` (default: the bundled model) when it is missing (needs the
    [convert] extra). An existing model.onnx converted from another model than the one named is refused: the
    command would otherwise run a different network than the user asked for."""
    from harmonizer_deploy.conversion.convert import convert

    onnx_path = Path(build_dir) / "model.onnx"
    if onnx_path.exists():
        check_build_model(build_dir, model)
        return onnx_path
    what = f"model {model}" if model is not None else "the bundled model"
    require(f"building the missing {onnx_path} (from {what})", "tensorflow", "tf2onnx")
    start = time.perf_counter()
    log.info(f"building {onnx_path} from {what} (first use)…")
    convert(model, onnx_path)
    log.info(f"built {onnx_path} (first use, {time.perf_counter() - start:.0f} s)")
    return onnx_path


def ensure_artifact(target: str, build_dir: str | Path = DEFAULT_BUILD_DIR, model: str | Path | None = None) -> Path:
    """`build_dir/<target>`, compiled for `target` from `build_dir/model.onnx` (converted first if missing) when it
    holds no artifact. A folder that exists without a manifest is not ours to replace: it is left for the caller's
    strict error."""
    from harmonizer_deploy.compiler.build import compile as compile_model
    from harmonizer_deploy.compiler.targets import load_target

    spec = load_target(target)
    artifact_dir = Path(build_dir) / spec.name
    if artifact_dir.exists():
        check_build_model(build_dir, model)
        return artifact_dir
    onnx_path = ensure_onnx(build_dir, model)
    start = time.perf_counter()
    log.info(f"building {artifact_dir} (first use, compiling for {spec.name})…")
    compile_model(onnx_path, spec.name, artifact_dir)
    log.info(f"built {artifact_dir} (first use, {time.perf_counter() - start:.0f} s)")
    return artifact_dir


def ensure_backend(name: str, build_dir: str | Path = DEFAULT_BUILD_DIR, model: str | Path | None = None) -> None:
    """Build what backend `name` runs: model.onnx for onnxruntime/openvino, `build_dir/<target>` for
    tvm-<target>, from `model` (default: the bundled model).

    tvm-<dir> where <dir> is not a target name (e.g. cpu-b1, compiled with options) is never guessed at."""
    from harmonizer_deploy.compiler.targets import available_targets

    if name == "tensorflow":
        return
    if name.startswith(("onnxruntime", "openvino")):
        ensure_onnx(build_dir, model)
    elif name.startswith("tvm-") and name.removeprefix("tvm-") in available_targets():
        ensure_artifact(name.removeprefix("tvm-"), build_dir, model)
    else:
        check_build_model(build_dir, model)


def check_build_model(build_dir: str | Path, model: str | Path | None) -> None:
    """Refuse, in one line, a build directory whose model.onnx was converted from another model than `model`
    (None: no model named, anything goes). Without this, `harmonize --model default --backend tvm-cpu` would
    silently run whatever build/ holds."""
    if model is None:
        return
    onnx_path = Path(build_dir) / "model.onnx"
    if not onnx_path.exists():
        return
    source = source_of_onnx(onnx_path)
    wanted = str(model)
    same = source == wanted or (source is not None and Path(source).exists() and Path(wanted).exists()
                                and Path(source).resolve() == Path(wanted).resolve())
    if not same:
        raise HarmonizerError(
            f"{onnx_path} was converted from {source or 'an unknown model'}, not {wanted}",
            f"pass --build-dir DIR (a new folder) to build {wanted} there, or drop --model to use {onnx_path}")


def ensure_bench(backends: list[str] | None, build_dir: str | Path = DEFAULT_BUILD_DIR) -> None:
    """What `bench` times: each named backend's files, or by default model.onnx and, when no TVM artifact is
    built yet, the cpu one (a bench of onnxruntime alone would not be what the user asked for)."""
    if backends:
        for name in backends:
            ensure_backend(name, build_dir)
        return
    ensure_onnx(build_dir)
    if not built_tvm_targets(Path(build_dir)):
        ensure_artifact("cpu", build_dir)
