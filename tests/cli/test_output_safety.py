"""Issue 15 §1 through the CLI: a command that writes a directory never replaces a folder it did not make."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harmonizer_deploy.cli import app
from harmonizer_deploy.core.errors import EXIT_USER_ERROR

runner = CliRunner()


def _snapshot(folder):
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def _assert_refused(result, *fragments):
    assert result.exit_code == EXIT_USER_ERROR, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output  # one logical line (rich may wrap it)
    for fragment in fragments:
        assert fragment in text, result.output


def _tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "main.py").write_text("code\n")
    _tiny_onnx(proj / "model.onnx")  # a real model: before the fix, compile went on and replaced the folder
    monkeypatch.chdir(proj)
    return proj


def test_compile_into_the_current_folder_refuses_and_changes_nothing(project):
    before = _snapshot(project)
    result = runner.invoke(app, ["compile", "model.onnx", "--target", "cpu", "-o", str(project)])
    _assert_refused(result, "not empty and was not written by harmonizer-deploy")
    assert _snapshot(project) == before
    assert sorted(p.name for p in project.parent.iterdir()) == ["proj"]


def test_compile_into_the_folder_holding_the_model_refuses(project):
    (project / "build").mkdir()
    (project / "build" / "model.json").write_text("{}")
    before = _snapshot(project)
    result = runner.invoke(app, ["compile", "model.onnx", "-o", "build"])
    _assert_refused(result, "build is not empty")
    assert _snapshot(project) == before


def test_output_naming_an_existing_file_is_one_line(project):
    result = runner.invoke(app, ["compile", "model.onnx", "-o", "src/main.py"])
    _assert_refused(result, "exists and is not a directory")
    assert (project / "src" / "main.py").read_text() == "code\n"


def test_bundle_into_a_user_folder_refuses(project, built):
    (project / "keep").mkdir()
    (project / "keep" / "file.txt").write_text("keep")
    result = runner.invoke(app, ["bundle", str(built / "cpu"), "-o", "keep"])
    _assert_refused(result, "keep is not empty")
    assert (project / "keep" / "file.txt").read_text() == "keep"


def test_bundle_over_its_own_artifact_refuses(built, tmp_path):
    before = _snapshot(built / "cpu")
    _assert_refused(runner.invoke(app, ["bundle", str(built / "cpu"), "-o", str(built / "cpu")]),
                    "would replace the artifact")
    _assert_refused(runner.invoke(app, ["bundle", str(built / "cpu"), "-o", str(built)]), "would replace the artifact")
    assert _snapshot(built / "cpu") == before
