"""Targets are data: one `targets/<name>.toml` per target. Adding a target never touches the CLI."""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError, reason


def targets_dir() -> Path:
    """`$HARMONIZER_DEPLOY_TARGETS`, else the repository's `targets/`, else the copy packed into the wheel."""
    env = os.environ.get("HARMONIZER_DEPLOY_TARGETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[2] / "targets", here.parent / "_targets"):
        if (candidate / "cpu.toml").is_file():
            return candidate
    raise HarmonizerError("no targets/ directory found", "set HARMONIZER_DEPLOY_TARGETS to the targets folder")


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
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def load_target(name: str) -> TargetSpec:
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        raise HarmonizerError(f"unknown target {name!r}", f"valid targets: {', '.join(available_targets())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HarmonizerError(f"target file {path} is not valid TOML ({reason(exc)})", "fix the file") from exc
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
        )
    except KeyError as exc:
        raise HarmonizerError(f"target file {path} lacks key {exc}", "see targets/cpu.toml for the format") from exc
