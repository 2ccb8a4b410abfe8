"""Targets are data: one `targets/<name>.toml` per target. Adding a target never touches the CLI.

Target TOMLs are looked up in a search path (`target_search_path`): the folders in `$HARMONIZER_DEPLOY_TARGETS`,
then the user's folder, then the ones shipped with the package, so a user can add or override a target without
writing into the installed package. `--target` also takes the path of a TOML file.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError, reason

TARGETS_ENV = "HARMONIZER_DEPLOY_TARGETS"

# Every key a target TOML may have; anything else is a typo and an error that names it. `target` and `host` are
# TVM target JSON and pass through as they are.
KNOWN_KEYS: dict[str, set[str] | None] = {
    "name": None, "description": None, "backend": None, "device": None, "pipeline": None, "export": None,
    "runner": None, "target": None, "host": None,
    "tolerance": {"atol", "rtol", "float16", "uint8"},  # [tolerance.<encoding>]: weights shipped smaller (web)
    "requires": {"global_funcs", "executables", "fix"},
    "options": {"winograd", "bundle", "archs", "default_arch", "schedule_rules", "vector_machine", "web_weights",
                "threads"},
    "verify": {"num_inputs", "batch", "time_steps"},
}


def targets_dir() -> Path:
    """The targets shipped with the tool: the repository's `targets/`, else the copy packed into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[2] / "targets", here.parent / "_targets"):
        if (candidate / "cpu.toml").is_file():
            return candidate
    raise HarmonizerError("no targets/ directory found (a broken install)",
                          f"reinstall harmonizer-deploy, or set {TARGETS_ENV} to a folder of target TOMLs")


def user_targets_dir() -> Path:
    """`$XDG_CONFIG_HOME/harmonizer-deploy/targets` (default `~/.config/...`): the user's own targets."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "harmonizer-deploy" / "targets"


def target_search_path() -> list[Path]:
    """Where target TOMLs are looked up, first match wins: `$HARMONIZER_DEPLOY_TARGETS` (folders separated by
    os.pathsep; it adds to the path instead of replacing it), the user's folder, then the shipped targets."""
    env = [Path(p) for p in os.environ.get(TARGETS_ENV, "").split(os.pathsep) if p]
    return [*env, user_targets_dir(), targets_dir()]


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    backend: str
    device: str
    pipeline: str
    export: str
    runner: str
    target: dict[str, Any]
    host: dict[str, Any] | None = None
    atol: float = 1e-4
    rtol: float = 1e-4
    required_funcs: tuple[str, ...] = ()
    required_executables: tuple[str, ...] = ()
    fix: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)  # default verify input sizes: num_inputs, batch, time_steps
    path: str = ""
    # `[tolerance.float16]`, `[tolerance.uint8]`: what weights shipped in that encoding may cost (web targets)
    weight_tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)

    def tolerance_for(self, weights: str | None) -> tuple[float, float]:
        """(atol, rtol) for an artifact whose weights ship as `weights` (None or float32: the plain tolerance)."""
        return self.weight_tolerances.get(weights or "float32", (self.atol, self.rtol))

    def with_web_weights(self, encoding: str) -> TargetSpec:
        """This web target with its weights shipped as `encoding` (`--web-weights float16|uint8`)."""
        if self.export != "wasm":
            raise HarmonizerError(f"target {self.name!r} is not a web target: its weights are not downloaded",
                                  "drop --web-weights (it applies to --target wasm and --target webgpu)")
        if encoding != "float32" and encoding not in self.weight_tolerances:
            known = ", ".join(["float32", *self.weight_tolerances])
            raise HarmonizerError(f"target {self.name!r} has no tolerance for {encoding} weights",
                                  f"use one of {known}, or add [tolerance.{encoding}] to {self.path or 'its TOML'}")
        return replace(self, options={**self.options, "web_weights": encoding})

    def resolved_target(self) -> dict[str, Any]:
        """The target JSON with `mcpu = "host"` replaced by this machine's CPU name and `arch = "detect"` by
        this machine's GPU architecture (or `[options] default_arch` when there is no GPU to ask)."""
        return _resolve_arch(_resolve_host(self.target), self.device, self.options.get("default_arch"))

    def with_arch(self, arch: str) -> TargetSpec:
        """This target for another GPU architecture (`--arch sm_90`); only the ones the TOML lists."""
        allowed = self.options.get("archs")
        if not allowed:
            raise HarmonizerError(f"target {self.name!r} has no selectable architecture", "drop --arch")
        if arch not in allowed:
            raise HarmonizerError(f"architecture {arch!r} is not one of target {self.name!r}'s",
                                  f"use one of {', '.join(allowed)} (or add it to [options] archs)")
        return replace(self, target={**self.target, "arch": arch})

    def resolved_host(self) -> dict[str, Any] | None:
        return _resolve_host(self.host) if self.host else None

    def tvm_target(self):
        import tvm

        host = self.resolved_host()
        return tvm.target.Target(self.resolved_target(), host=host) if host else tvm.target.Target(
            self.resolved_target())

    def missing_capabilities(self) -> list[str]:
        """What the installed TVM / machine lacks to *build* for this target (empty when ready)."""
        import tvm

        missing = [f"TVM global function {f}" for f in self.required_funcs
                   if tvm.get_global_func(f, allow_missing=True) is None]
        missing += [f"executable {e}" for e in self.required_executables if shutil.which(e) is None]
        return missing

    def check_buildable(self) -> None:
        missing = self.missing_capabilities()
        if missing:
            raise HarmonizerError(
                f"the installed TVM/toolchain cannot build for target {self.name!r}: missing {', '.join(missing)}",
                self.fix or "run `harmonizer-deploy doctor`",
            )


def _resolve_host(target: dict[str, Any]) -> dict[str, Any]:
    """`mcpu = "host"` → this CPU's LLVM name and its physical core count (MetaSchedule needs `num-cores`)."""
    resolved = dict(target)
    if resolved.get("mcpu") == "host":
        import psutil
        from tvm.target import codegen

        resolved["mcpu"] = codegen.llvm_get_system_cpu()
        resolved.setdefault("num-cores", psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    return resolved


def detect_gpu_arch(device: str) -> str | None:
    """`sm_XY` of GPU 0 when `device` is cuda and one is present; None otherwise (nothing to detect)."""
    if device != "cuda":
        return None
    import tvm

    dev = tvm.device(device, 0)
    if not dev.exist:
        return None
    return "sm_" + str(dev.compute_version).replace(".", "")


def _resolve_arch(target: dict[str, Any], device: str, default: str | None) -> dict[str, Any]:
    if target.get("arch") != "detect":
        return target
    arch = detect_gpu_arch(device) or default
    if not arch:
        raise HarmonizerError(f"no {device} GPU to detect the architecture from, and no default",
                              "pass --arch, or set [options] default_arch in the target TOML")
    return {**target, "arch": arch}


def available_targets() -> list[str]:
    """Names of every target on the search path (a name found twice is listed once: the first one wins)."""
    return sorted({p.stem for folder in target_search_path() if folder.is_dir() for p in folder.glob("*.toml")})


def find_target_file(name: str) -> Path:
    """The TOML for `name`: a path to a .toml file, else `<name>.toml` in the first folder of the search path."""
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise HarmonizerError(f"target file not found: {path}", "pass an existing .toml file or a target name "
                                  f"({', '.join(available_targets())})")
        return path
    for folder in target_search_path():
        if (folder / f"{name}.toml").is_file():
            return folder / f"{name}.toml"
    raise HarmonizerError(f"unknown target {name!r}", f"valid targets: {', '.join(available_targets())} (or the "
                          "path of a target .toml)")


def unknown_keys(data: dict[str, Any]) -> list[str]:
    """Keys of a parsed target TOML that the tool does not know (`table.key` for keys inside a known table)."""
    found = []
    for key, value in data.items():
        if key not in KNOWN_KEYS:
            found.append(key)
        elif KNOWN_KEYS[key] is not None:
            if not isinstance(value, dict):
                found.append(f"{key} (a table is expected)")
            else:
                found += [f"{key}.{k}" for k in value if k not in KNOWN_KEYS[key]]
    return found


def load_target(name: str) -> TargetSpec:
    """A target by name (searched on `target_search_path`) or by the path of its TOML."""
    path = find_target_file(name)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HarmonizerError(f"target file {path} is not valid TOML ({reason(exc)})", "fix the file") from exc
    except OSError as exc:
        raise HarmonizerError(f"cannot read target file {path} ({exc.strerror})", "check the path") from exc
    unknown = unknown_keys(data)
    if unknown:
        raise HarmonizerError(f"target file {path} has unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(unknown)}", "fix the spelling; see targets/cpu.toml for the format")
    if name.endswith(".toml") or os.sep in name:
        name = path.stem
    try:
        tolerance = data.get("tolerance", {})
        requires = data.get("requires", {})
        return TargetSpec(
            name=data.get("name", name), description=data.get("description", ""), backend=data["backend"],
            device=data["device"], pipeline=data["pipeline"], export=data["export"], runner=data["runner"],
            target=dict(data["target"]), host=dict(data["host"]) if "host" in data else None,
            atol=float(tolerance.get("atol", 1e-4)), rtol=float(tolerance.get("rtol", 1e-4)),
            required_funcs=tuple(requires.get("global_funcs", ())),
            required_executables=tuple(requires.get("executables", ())), fix=requires.get("fix", ""),
            options=dict(data.get("options", {})), verify=dict(data.get("verify", {})), path=str(path),
            weight_tolerances={k: (float(v["atol"]), float(v["rtol"])) for k, v in tolerance.items()
                               if isinstance(v, dict)},
        )
    except KeyError as exc:
        raise HarmonizerError(f"target file {path} lacks key {exc}", "see targets/cpu.toml for the format") from exc
    except (TypeError, ValueError) as exc:
        raise HarmonizerError(f"target file {path} has a value of the wrong type ({exc})",
                              "see targets/cpu.toml for the format") from exc
