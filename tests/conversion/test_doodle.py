"""The Bach Doodle architecture (separable, dilated, split pointwise) through convert → TVM → compile → verify."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest

from seeded_keras import save_seeded_keras


def _conv_attrs(path) -> Counter:
    import onnx

    found: Counter = Counter()
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            found[(tuple(attrs.get("dilations", (1, 1))), int(attrs.get("group", 1)))] += 1
    return found


def _check_plain_convs(onnx_path, config) -> None:
    """Every layer is Conv nodes only: depthwise (group = channels, the layer's dilation) + pointwise, the split
    layer one grouped 1×1 Conv; no space-to-batch emulation of dilation and no wrapped sub-function."""
    import onnx

    from harmonizer_deploy.compiler.relax_import import import_onnx

    ops = Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)
    assert not {"StatefulPartitionedCall", "SpaceToDepth", "DepthToSpace", "Pad"} & set(ops), ops
    convs = _conv_attrs(onnx_path)
    specs = config.layer_specs()
    assert ops["Conv"] == 2 * len(specs)
    for spec in specs:
        if spec["kind"] != "regular" and spec["index"] > 0:
            assert convs[(tuple(spec["dilation"]), spec["in"])] >= 1, (spec, convs)
    assert convs[((1, 1), config.num_pointwise_splits)] == len(config.pointwise_split_layers)

    mod, _, _, _ = import_onnx(onnx.load(str(onnx_path)))
    text = mod.script(show_meta=False)
    relax_convs = re.findall(r"R\.nn\.conv2d\((.*?)\)\n", text)
    assert len(relax_convs) == 2 * len(specs)
    assert any("dilation=[16, 32]" in c or "dilation=(16, 32)" in c for c in relax_convs), relax_convs[:3]
    # only the NHWC ↔ NCHW transposes at the ends; no pads or reshapes emulating dilation
    assert text.count("R.permute_dims(") <= 2 and "R.nn.pad(" not in text and "R.reshape(" not in text


def _mini_doodle():
    from harmonizer_deploy.music.config import load_config

    # the Doodle's layer kinds at a test size: all six dilations, a 4-way split pointwise layer (layer 4)
    return dataclasses.replace(load_config("doodle-33x128"), name="mini-doodle", num_layers=9, num_filters=16,
                               pointwise_split_layers=(4,))


def test_mini_doodle_converts_to_plain_convs_compiles_and_verifies(tmp_path):
    import harmonizer_deploy as hd

    config = _mini_doodle()
    keras_path = save_seeded_keras(config, 0, tmp_path / "doodle.keras")
    result = hd.convert(keras_path, tmp_path / "model.onnx")
    assert result.max_abs_err <= 1e-4
    _check_plain_convs(tmp_path / "model.onnx", config)
    hd.compile(tmp_path / "model.onnx", "cpu", tmp_path / "cpu")
    report = hd.verify(tmp_path / "cpu", "cpu", num_inputs=2, batch=2, time_steps=16)
    assert report.passed, report.outputs


@pytest.mark.slow
def test_doodle_33x128_convert_compile_verify(tmp_path):
    import harmonizer_deploy as hd
    from harmonizer_deploy.music.config import load_config

    config = load_config("doodle-33x128")
    keras_path = save_seeded_keras(config, 0, tmp_path / "doodle.keras")
    hd.convert(keras_path, tmp_path / "model.onnx")
    _check_plain_convs(tmp_path / "model.onnx", config)
    hd.compile(tmp_path / "model.onnx", "cpu", tmp_path / "cpu")
    assert hd.verify(tmp_path / "cpu", "cpu", num_inputs=2, batch=1, time_steps=32).passed
