"""Small hostile inputs shared by the bad-input regressions and the fuzz suite: a tiny ONNX model, a hand-made
artifact directory (no compile needed to reach verify's input handling), MIDI files, and the one-line-error check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import EXIT_USER_ERROR


def tiny_onnx(path: Path, dims: tuple[str, str] = ("batch", "time"), external: str | None = None) -> Path:
    """probs = Softmax(x · w) over axis 2 on x [batch, time, 46, 8] with symbolic dims `dims`; with `external`,
    the weight lives in external data at that location (relative to the model file, as onnx stores it)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((8, 4), 0.1, dtype=np.float32), "w")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "128")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"],
                                                                             axis=2)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dims[0], dims[1], 46, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [dims[0], dims[1], 46, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def fake_artifact(directory: Path, onnx_path: Path) -> Path:
    """A cpu artifact directory whose manifest points at `onnx_path` (hash included) but holds no library:
    enough for verify to reach its input handling and the onnxruntime reference, which come first."""
    import numpy as np

    from harmonizer_deploy.core.artifacts import sha256_file

    directory.mkdir(parents=True, exist_ok=True)
    # a library verify never gets to load, and empty params: both hashed, so the integrity check (which comes
    # before anything is loaded) passes and the input handling under test is reached
    (directory / "model.so").write_bytes(b"not loaded: verify stops at the inputs first")
    np.savez(directory / "params.npz")
    artifacts = {name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
                 for name in ("model.so", "params.npz")}
    manifest = {"format_version": 1, "target": "cpu", "backend": "tvm-cpu", "device": "cpu", "runner": "local",
                "model": {"path": str(onnx_path.resolve()), "sha256": sha256_file(onnx_path), "sidecar": None},
                "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", "time", 46, 8]}],
                "outputs": [{"name": "probs", "dtype": "float32", "shape": ["batch", "time", 46, 4]}],
                "static_shape": None, "artifacts": artifacts, "library": "model.so", "params": []}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def melody_midi(path: Path, pitches: tuple[int, ...] = (60, 62, 64, 65), channel: int = 0,
                ticks_per_beat: int = 480) -> Path:
    """A one-track melody, one quarter note per pitch."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    step = max(ticks_per_beat, 1)
    for pitch in pitches:
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0, channel=channel))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=step, channel=channel))
    mid.save(str(path))
    return path


def assert_one_line_error(result, *fragments: str, code: int = EXIT_USER_ERROR) -> str:
    """`result` (a CliRunner result) is exit `code` with one `error: <problem> — <fix>` line; returns the text."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    text = " ".join(result.output.split())  # rich may wrap; the message itself is one logical line
    assert text.startswith("error:"), result.output
    assert " — " in text, result.output
    assert "()" not in text, result.output
    for fragment in fragments:
        assert fragment in text, result.output
    return text


def tiny_site(root: Path) -> Any:
    """A WebServer on 127.0.0.1 over a fake artifact and a one-input job (not started: use it as a context)."""
    from harmonizer_deploy.web import server as server_module

    art = root / "art"
    art.mkdir()
    (art / "manifest.json").write_text("{}")
    (root / "tvmjs.js").write_text("// js")
    job = server_module.Job(artifact_url="/artifacts/model/", inputs=[b"\0" * 8], shapes=[[2]])
    return server_module.WebServer(root / "tvmjs.js", {"model": art}, job)
