"""Signatures read from the model: a SavedModel's serving signature with two inputs (one int32), two outputs."""

from __future__ import annotations

import json

import harmonizer_deploy as hd
from harmonizer_deploy.conversion.source import load_source
from zoo import ZOO


def test_saved_model_signature_is_read_converted_and_recorded(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    ZOO["two_inputs_two_outputs"]().export(tmp_path / "sm", verbose=False)
    source = load_source(tmp_path / "sm")
    declared = {s.name: (s.dtype, s.shape) for s in source.inputs}
    assert declared == {"ids": ("int32", (None, None)), "features": ("float32", (None, 8))}
    assert len(source.outputs) == 2 and not source.is_harmonizer
    result = hd.convert(tmp_path / "sm", tmp_path / "model.onnx")
    assert result.max_abs_err <= 1e-4
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert {i["name"]: i["shape"] for i in sidecar["inputs"]} == {"ids": ["batch", "ids_dim1"],
                                                                  "features": ["batch", 8]}
    assert sidecar["signature"]["inputs"] == [s.to_dict() for s in source.inputs]
    assert sidecar["index_ranges"] == {"ids": [0, 19]} and sidecar["encoding"] is None
