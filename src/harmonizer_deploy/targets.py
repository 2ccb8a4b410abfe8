"""Targets are data: one `targets/<name>.toml` per target. Adding a target never touches the CLI."""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HarmonizerError


def targets_dir() -> Path:
    """`$HARMONIZER_DEPLOY_TARGETS`, else the repository's `targets/`, else the copy packed into the wheel."""
    env = os.environ.get("HARMONIZER_DEPLOY_TARGETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "targets", here / "_targets"):
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
        """The target JSON with `mcpu = "host"` replaced by this machine's CPU name."""
        return _resolve_host(self.target)

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
    resolved = dict(target)
    if resolved.get("mcpu") == "host":
        from tvm.target import codegen

        resolved["mcpu"] = codegen.llvm_get_system_cpu()
    return resolved


def available_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def load_target(name: str) -> TargetSpec:
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        raise HarmonizerError(f"unknown target {name!r}", f"valid targets: {', '.join(available_targets())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HarmonizerError(f"target file {path} is not valid TOML ({exc})", "fix the file") from exc
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
