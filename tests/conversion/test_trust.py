"""Issue 15 §2: `convert` never runs a SavedModel whose graph has side effects, unless told to trust it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmonizer_deploy.cli import app
from harmonizer_deploy.conversion.source import load_source
from harmonizer_deploy.conversion.trust import scan_saved_model
from harmonizer_deploy.core.errors import EXIT_USER_ERROR, HarmonizerError

tf = pytest.importorskip("tensorflow")
SPEC = tf.TensorSpec([None, None, 46, 8], tf.float32, name="x")


def _save(module: tf.Module, path: Path) -> Path:
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


class Plain(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.v = tf.Variable(2.0)  # variables: the SavedModel carries its own SaveV2/RestoreV2 saver functions

    @tf.function(input_signature=[SPEC])
    def serve(self, x):
        return {"out": tf.nn.softmax(x * self.v, axis=2)}


def _writes_file(target: Path) -> tf.Module:
    class Writer(Plain):
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            tf.io.write_file(str(target), "pwned")
            return {"out": tf.nn.softmax(x * self.v, axis=2)}

    return Writer()


def test_convert_refuses_a_saved_model_that_writes_a_file_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned.txt"
    model = _save(_writes_file(marker), tmp_path / "evil")
    result = CliRunner().invoke(app, ["convert", str(model), "-o", str(tmp_path / "out" / "model.onnx")])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "Traceback" not in result.output
    assert "WriteFile" in text and "--trust-model" in text
    assert not marker.exists()
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_trust_model_lets_it_load(tmp_path):
    model = _save(_writes_file(tmp_path / "pwned.txt"), tmp_path / "evil")
    with pytest.raises(HarmonizerError, match="side effects"):
        load_source(model)
    source = load_source(model, trust_model=True)  # loaded, not run: nothing written yet
    assert source.kind == "saved_model" and not (tmp_path / "pwned.txt").exists()


def test_a_plain_saved_model_with_variables_scans_clean(tmp_path):
    assert scan_saved_model(_save(Plain(), tmp_path / "plain")) == []


def test_keras_export_scans_clean(tmp_path, small_keras):
    import keras

    keras.models.load_model(small_keras, compile=False).export(str(tmp_path / "exported"), verbose=False)
    assert scan_saved_model(tmp_path / "exported") == []


class PyFuncModel(Plain):
    @tf.function(input_signature=[SPEC])
    def serve(self, x):
        y = tf.numpy_function(lambda a: a, [x], tf.float32)
        return {"out": tf.reshape(y, tf.shape(x))}


class CheckpointWriter(Plain):
    @tf.function(input_signature=[SPEC])
    def serve(self, x):
        tf.raw_ops.SaveV2(prefix="/tmp/should-not-exist", tensor_names=["v"], shape_and_slices=[""],
                          tensors=[self.v])
        return {"out": x}


class FilePrinter(Plain):
    @tf.function(input_signature=[SPEC])
    def serve(self, x):
        tf.print(x, output_stream="file:///tmp/should-not-exist.txt")
        return {"out": x}


@pytest.mark.parametrize(("module", "op"), [(PyFuncModel, "PyFunc"), (CheckpointWriter, "SaveV2"),
                                            (FilePrinter, "PrintV2")])
def test_side_effect_ops_are_found(tmp_path, module, op):
    found = scan_saved_model(_save(module(), tmp_path / "m"))
    assert op in {f.op for f in found}
    with pytest.raises(HarmonizerError, match=op):
        load_source(tmp_path / "m")


def test_garbage_saved_model_pb_is_one_clear_error(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(HarmonizerError, match="SavedModel"):
        load_source(tmp_path / "m")


def test_convert_leaves_no_autograph_files_in_the_system_temp_folder(tmp_path, small_keras, monkeypatch):
    """TF writes `__autograph_generated_file*.py` to tempfile's folder while tracing (only the first time a
    function's code is traced in a process, so the test checks where tempfile points while convert traces)."""
    import tempfile

    from harmonizer_deploy.conversion import convert as convert_module

    system_tmp = tmp_path / "system-tmp"  # stands in for /tmp
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    during: list[Path] = []
    real = convert_module.to_onnx

    def spy(*args, **kwargs):
        during.append(Path(tempfile.gettempdir()))
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_module, "to_onnx", spy)
    convert_module.convert(small_keras, tmp_path / "out" / "model.onnx")
    assert len(during) == 1 and during[0].parent == tmp_path / "out" and during[0].name.startswith(".model.onnx.")
    assert not during[0].exists()
    assert list(system_tmp.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.json", "model.onnx"]
    assert tempfile.tempdir == str(system_tmp)  # restored
