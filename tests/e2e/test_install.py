"""Dependencies: ranges in pyproject.toml, the tested set in constraints.txt, and one install recipe that uses it."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            assert ver, f"constraints.txt line {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = ver
    return pins


def requirements(extra: str | None = None) -> list[Requirement]:
    reqs = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_core_dependencies_are_ranges_without_tensorflow():
    core = requirements()
    names = {canonicalize_name(r.name) for r in core}
    assert {"onnx", "onnxruntime", "apache-tvm", "apache-tvm-ffi", "onnxslim", "typer", "rich", "numpy", "mido",
            "matplotlib", "psutil"} <= names
    assert not names & {"tensorflow-cpu", "tensorflow", "tf2onnx", "music21", "keras"}
    for r in core:
        assert not any(s.operator == "==" for s in r.specifier), f"{r} is an exact pin; ranges belong here"
        assert r.specifier, f"{r} has no bounds"
    ffi = next(r for r in core if r.name == "apache-tvm-ffi")
    assert Version("0.1.14.post1") in ffi.specifier and Version("0.1.15.2") not in ffi.specifier


def test_extras():
    extras = PROJECT["optional-dependencies"]
    assert {"convert", "train", "tune", "dev", "peers", "all"} <= extras.keys()
    assert {r.name for r in requirements("convert")} == {"tensorflow-cpu", "tf2onnx"}
    assert "music21" in {r.name for r in requirements("train")}
    assert {"cloudpickle", "xgboost"} <= {r.name for r in requirements("tune")}
    assert "openvino==2026.4.1" in extras["peers"]
    assert Requirement(extras["all"][0]).extras >= {"convert", "train", "tune"}


def test_constraints_pin_every_dependency_inside_its_range():
    pins = constraints()
    for extra in (None, "convert", "train", "tune", "peers", "dev"):
        for r in requirements(extra):
            if r.name == "harmonizer-deploy":
                continue
            pinned = pins.get(canonicalize_name(r.name))
            assert pinned, f"{r.name} is missing from constraints.txt"
            assert r.specifier.contains(pinned, prereleases=True), f"constraints.txt {r.name}=={pinned} outside {r}"
    assert "harmonizer-deploy" not in pins


def test_constraints_are_the_installed_versions():
    """The tested set is what this venv runs: a version bump without regenerating constraints.txt fails here."""
    differ = []
    for name, pinned in constraints().items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # e.g. the [tune] extra's xgboost where it is not installed
            continue
        if installed != pinned:
            differ.append(f"{name}: installed {installed}, constraints.txt {pinned}")
    assert not differ, differ


def test_the_install_recipe_uses_the_constraints_without_force_reinstall():
    script = (REPO / "scripts" / "install.sh").read_text()
    assert re.search(r"install -q -c \"\$constraints\" -e \"\.\[\$\{extras\}\]\"", script)
    assert 'extras="${EXTRAS:-all,dev}"' in script
    assert "--force-reinstall" not in script
    assert "mlc-ai" in script  # an mlc-ai TVM build is detected and kept
    makefile = (REPO / "Makefile").read_text()
    assert "constraints.txt" in makefile.split("$(VENV)/.installed:")[1].splitlines()[0]
