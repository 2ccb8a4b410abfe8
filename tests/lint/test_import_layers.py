"""The layer contracts in pyproject.toml hold, and they really fail when a lower layer imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.is_file(), reason="import-linter is not installed (the dev extra)")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root / 'src'}:{root}"})


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """A copy of the sources, the contracts and their custom contract type: planted imports never touch the repo."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.mid"))
    shutil.copytree(REPO / "lint", root / "lint", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _plant(root: Path, module: str, line: str) -> str:
    path = root / "src" / "harmonizer_deploy" / module
    original = path.read_text()
    path.write_text(original + f"\n{line}\n")
    return original


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("core/artifacts.py", "from harmonizer_deploy.compiler import targets  # noqa", "Stages import downwards only"),
    ("compiler/build.py", "def _up():\n    from harmonizer_deploy.verification import verify  # noqa",
     "Stages import downwards only"),
    ("music/midi.py", "import typer  # noqa", "Only the CLI imports Typer"),
    ("core/params.py", "def _tf():\n    import tensorflow  # noqa", "core needs neither TensorFlow nor TVM"),
    ("compiler/build.py", "def _fe():\n    from tvm.relax.frontend import onnx  # noqa",
     "Only the frontend touches TVM's ONNX frontend"),
])
def test_a_planted_upward_import_breaks_its_contract(copy, module, line, contract):
    original = _plant(copy, module, line)
    try:
        result = _lint(copy)
    finally:
        (copy / "src" / "harmonizer_deploy" / module).write_text(original)
    assert result.returncode != 0, result.stdout[-2000:]
    assert f"{contract} BROKEN" in result.stdout, result.stdout[-3000:]


def test_the_repository_keeps_every_contract():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout
