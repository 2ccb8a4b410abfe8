"""Web targets can ship their weights as float16 or uint8 (scale + min per tensor), decoded to float32 at load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harmonizer_deploy.compiler.exporters import decode_web_param, write_web_params
from harmonizer_deploy.compiler.targets import load_target
from harmonizer_deploy.core.errors import HarmonizerError


@pytest.mark.parametrize(("encoding", "bytes_per_value", "bound"), [("float32", 4, 0.0), ("float16", 2, 1e-3),
                                                                     ("uint8", 1, 0.5 / 255)])
def test_each_encoding_round_trips_within_its_quantization_step(tmp_path, encoding, bytes_per_value, bound):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(0, 1, (3, 3, 8, 5)).astype(np.float32), np.linspace(-2, 3, 7, dtype=np.float32),
              np.full((4,), 0.25, np.float32)]  # a constant tensor: scale 0 must not divide by zero
    info = write_web_params(tmp_path, arrays, encoding)
    index = json.loads((tmp_path / "params.json").read_text())
    blob = (tmp_path / "params.bin").read_bytes()
    assert info == {"encoding": encoding, "bytes": len(blob)} and index["encoding"] == encoding
    for a, entry in zip(arrays, index["params"], strict=True):
        assert entry["offset"] % 4 == 0 and entry["bytes"] == a.size * bytes_per_value
        decoded = decode_web_param(blob[entry["offset"]:entry["offset"] + entry["bytes"]], entry)
        span = float(a.max() - a.min()) or 1.0
        assert decoded.shape == a.shape and decoded.dtype == np.float32
        assert np.abs(decoded - a).max() <= bound * (span if encoding == "uint8" else np.abs(a).max()) + 1e-7


def test_unknown_encoding_and_non_web_target_are_one_line_errors(tmp_path):
    with pytest.raises(HarmonizerError, match="unknown web weight encoding"):
        write_web_params(tmp_path, [np.zeros(2, np.float32)], "int4")
    with pytest.raises(HarmonizerError, match="not a web target"):
        load_target("cpu").with_web_weights("uint8")
    wasm = load_target("wasm")
    assert wasm.with_web_weights("uint8").tolerance_for("uint8") == wasm.weight_tolerances["uint8"]
    assert wasm.tolerance_for(None) == (wasm.atol, wasm.rtol)


@pytest.mark.parametrize("encoding", ["float32", "float16", "uint8"])
def test_integer_parameters_keep_their_dtype_and_values(tmp_path, encoding):
    """An embedding's index bound or a folded shape is an integer parameter: as float32 the page would hand the
    model a tensor of the wrong dtype (TVM's web runtime then stops with exit(1))."""
    arrays = [np.array(19, np.int32), np.arange(-3, 3, dtype=np.int64).reshape(2, 3), np.ones(3, np.float32)]
    write_web_params(tmp_path, arrays, encoding)
    index = json.loads((tmp_path / "params.json").read_text())["params"]
    blob = (tmp_path / "params.bin").read_bytes()
    assert [(e["dtype"], e.get("raw", False)) for e in index[:2]] == [("int32", True), ("int64", True)]
    assert all(e["offset"] % 4 == 0 for e in index)
    for a, entry in zip(arrays[:2], index, strict=False):
        decoded = decode_web_param(blob[entry["offset"]:entry["offset"] + entry["bytes"]], entry)
        assert decoded.dtype == a.dtype and np.array_equal(decoded, a)
