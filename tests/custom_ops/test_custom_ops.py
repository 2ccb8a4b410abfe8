"""Custom layers through the registry: each strategy TF → ONNX → onnxruntime → TVM, and the failures without it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import harmonizer_deploy as hd
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.encoding import realistic_inputs

STRATEGIES = ("rewrite", "custom-op", "decompose")


@pytest.fixture(scope="session")
def variant_config():
    from harmonizer_deploy.music.config import ModelConfig

    return ModelConfig(name="tiny-custom", num_layers=5, num_filters=8, melody_attention_after=1,
                       attention_key_dim=4, logsumexp_pool_after=2, pitch_range_softmax=True)


@pytest.fixture(scope="session")
def variant_keras(tmp_path_factory, variant_config):
    """The custom-attention variant, tiny, seeded, saved as .keras."""
    from seeded_keras import save_seeded_keras

    return save_seeded_keras(variant_config, 3, tmp_path_factory.mktemp("variant") / "variant.keras")


@pytest.fixture(scope="session")
def variant_builds(tmp_path_factory, variant_keras):
    """convert (each strategy forced) + compile --target cpu, once per session."""
    out = {}
    for strategy in STRATEGIES:
        build = tmp_path_factory.mktemp(f"build-{strategy}")
        result = hd.convert(variant_keras, build / "model.onnx", custom_op_strategy=strategy)
        hd.compile(build / "model.onnx", "cpu", build / "cpu")
        out[strategy] = (build, result)
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_matches_tensorflow_in_onnxruntime_and_tvm(strategy, variant_builds, variant_keras):
    from harmonizer_deploy.conversion.source import load_source
    from harmonizer_deploy.run.tvm import CompiledModel

    build, result = variant_builds[strategy]
    assert result.custom_ops == {"melody_attention": strategy, "logsumexp_pool": strategy, "probs": strategy}
    assert result.max_abs_err <= 1e-5  # onnxruntime vs TensorFlow, checked by convert
    report = hd.verify(build / "cpu", "cpu", num_inputs=2, batch=2, time_steps=12)  # TVM vs onnxruntime
    assert report.passed and report.outputs[0]["max_abs_err"] <= 1e-5
    x = realistic_inputs(7, 2, 10)  # TVM vs TensorFlow directly, at a third shape
    expected = load_source(variant_keras).run(x)["probs"]
    actual = CompiledModel(build / "cpu").run(x)
    assert np.max(np.abs(actual - expected)) <= 1e-5
    # the pitch-range softmax really masks: the bass can never sing above MIDI 64
    assert np.all(actual[:, :, 64 - 36 + 1 :, 3] == 0.0)


def test_custom_op_strategy_emits_custom_domain_nodes(variant_builds):
    model = onnx.load(str(variant_builds["custom-op"][0] / "model.onnx"))
    custom = {(n.domain, n.op_type) for n in model.graph.node if n.domain}
    assert custom == {("ai.harmonizer", "MelodyHarmonyAttention"), ("ai.harmonizer", "PitchMaskedSoftmax"),
                      ("ai.harmonizer", "CumulativeLogsumexp")}
    # onnxruntime runs them from model-local functions; TVM from the registry's converters (not inlined)
    assert {(f.domain, f.name) for f in model.functions} == custom


def test_decompose_strategy_is_inlined_before_tvm(variant_builds):
    from harmonizer_deploy.custom_ops.tvm_prepare import prepare_for_tvm

    model = onnx.load(str(variant_builds["decompose"][0] / "model.onnx"))
    assert {n.domain for n in model.graph.node} == {"", "ai.harmonizer.decomposed"}
    prepared, report = prepare_for_tvm(model)
    assert all(n.domain == "" for n in prepared.graph.node)
    assert len(report.inlined) == 3


def test_rewrite_strategy_saves_the_modified_model(variant_builds):
    import keras

    build, _ = variant_builds["rewrite"]
    model = onnx.load(str(build / "model.onnx"))
    assert all(n.domain == "" for n in model.graph.node) and not model.functions
    rewritten = keras.models.load_model(build / "model.rewritten.keras")
    classes = {type(layer).__name__ for layer in rewritten.layers}
    assert {"MelodyHarmonyAttentionRewritten", "CausalLogSumExpPoolRewritten"} <= classes
    assert "MelodyHarmonyAttention" not in classes
    sidecar = json.loads((build / "model.json").read_text())
    assert sidecar["custom_ops"]["rewritten_model"].endswith("model.rewritten.keras")


def test_without_the_registry_conversion_fails_clearly(variant_keras, tmp_path):
    with pytest.raises(HarmonizerError) as info:
        hd.convert(variant_keras, tmp_path / "m.onnx", custom_op_strategy="none")
    message = info.value.one_line()
    assert "CumulativeLogsumexp" in message and "no strategy" in message
    assert "rewrite" in message and "custom-op" in message and "decompose" in message
    assert "\n" not in message
    assert not (tmp_path / "m.onnx").exists()


def test_attention_alone_without_registry_is_not_silently_converted(tmp_path):
    """tf2onnx's Tensordot output for the attention layer is invalid ONNX: named, with the fix."""
    from harmonizer_deploy.music.config import ModelConfig
    from harmonizer_deploy.music.model import build_model, seeded_weights, set_weights

    cfg = ModelConfig(name="attn", num_layers=4, num_filters=8, melody_attention_after=1, attention_key_dim=4)
    model = build_model(cfg)
    set_weights(model, cfg, seeded_weights(cfg, seed=2))
    model.save(tmp_path / "a.keras")
    with pytest.raises(HarmonizerError, match="melody_attention") as info:
        hd.convert(tmp_path / "a.keras", tmp_path / "a.onnx", custom_op_strategy="none")
    assert "--custom-op-strategy" in info.value.one_line() and "Tensordot" in info.value.one_line()
    assert hd.convert(tmp_path / "a.keras", tmp_path / "a.onnx").max_abs_err <= 1e-5


def test_unknown_or_unavailable_strategy_is_one_clear_error(variant_keras, tmp_path):
    from harmonizer_deploy.conversion.source import load_source
    from harmonizer_deploy.custom_ops import CustomOp, CustomOpRegistry, default_registry
    from harmonizer_deploy.custom_ops.plan import plan_conversion

    with pytest.raises(HarmonizerError, match="unknown custom-op strategy"):
        hd.convert(variant_keras, tmp_path / "m.onnx", custom_op_strategy="magic")
    full = default_registry()
    only_rewrite = CustomOpRegistry()
    for entry in (e for e in full if e.rewrite is not None):  # KerasGRU has no rewrite
        only_rewrite.register(CustomOp(op_type=entry.op_type, summary=entry.summary, keras_class=entry.keras_class,
                                       tf_op=entry.tf_op, rewrite=entry.rewrite, preferred="rewrite"))
    with pytest.raises(HarmonizerError, match="no 'custom-op' strategy") as info:
        plan_conversion(load_source(variant_keras), "custom-op", tmp_path / "m.onnx", only_rewrite)
    assert "--custom-op-strategy rewrite" in info.value.one_line()


def test_registry_entries_offer_all_three_strategies():
    from harmonizer_deploy.custom_ops import default_registry

    registry = default_registry()
    variant_ops = {"MelodyHarmonyAttention", "PitchMaskedSoftmax", "CumulativeLogsumexp"}
    assert {e.op_type for e in registry} >= variant_ops | {"KerasGRU"}
    for entry in registry:
        if entry.op_type in variant_ops:
            assert entry.strategies == ("rewrite", "custom-op", "decompose"), entry.op_type
    assert registry.get("KerasGRU").strategies == ("custom-op", "decompose")
    assert set(registry.tvm_converters()) >= {("ai.harmonizer", e.op_type) for e in registry} | {("", "GRU")}


def test_ops_scan_flags_breaking_layers_with_strategy(variant_keras):
    from harmonizer_deploy.coverage.ops_scan import scan

    (report,) = scan(variant_keras, check_tvm=False)
    rows = {r.layer: r for r in report.rows}
    pool = rows["logsumexp_pool"]
    assert pool.keras_class == "CausalLogSumExpPool" and pool.custom
    assert pool.tf2onnx_missing == ["CumulativeLogsumexp"] and pool.breaks
    assert "--custom-op-strategy" in pool.fix and pool.strategies == ["rewrite", "custom-op", "decompose"]
    attention = rows["melody_attention"]
    assert attention.custom and attention.breaks and "MatMul" in attention.onnx_check
    assert attention.strategies == ["rewrite", "custom-op", "decompose"]
    assert rows["probs"].keras_class == "PitchMaskedSoftmax" and not rows["probs"].breaks
    assert not rows["conv0_relu"].breaks and rows["conv0_relu"].onnx_ops == ["Relu"]
    assert report.tf2onnx_unsupported == ["CumulativeLogsumexp"]
    assert report.with_registry["verified"].startswith("max abs err")


def test_ops_scan_on_an_extracted_directory_and_onnx_file(variant_builds, tmp_path):
    import shutil

    from harmonizer_deploy.coverage.ops_scan import scan

    build, _ = variant_builds["custom-op"]
    shutil.copy(build / "model.onnx", tmp_path / "model.onnx")
    (report,) = scan(tmp_path)  # a directory, as from `harmonizer-deploy extract`
    assert report.kind == "onnx" and not report.broken
    rows = {r.layer: r for r in report.rows}
    assert rows["ai.harmonizer::MelodyHarmonyAttention ×1"].strategies == ["rewrite", "custom-op", "decompose"]
    assert report.tvm_import.startswith("ok")


def test_ops_scan_onnx_flags_custom_node_without_converter(tmp_path):
    from harmonizer_deploy.coverage.ops_scan import scan

    onnx.save(_custom_relu_model(), tmp_path / "relu.onnx")
    (report,) = scan(tmp_path / "relu.onnx")
    (row,) = [r for r in report.rows if r.custom]
    assert row.breaks and row.tvm_missing == ["ai.harmonizer::Relu"] and "no registry strategy" in row.fix


def _custom_relu_model() -> onnx.ModelProto:
    """y = ai.harmonizer::Relu(x), whose ONNX function is *not* the built-in Relu: it is x − 1."""
    from onnx import TensorProto, helper

    body = [helper.make_node("Constant", [], ["one"], value_float=1.0),
            helper.make_node("Sub", ["x", "one"], ["y"])]
    function = helper.make_function("ai.harmonizer", "Relu", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], domain="ai.harmonizer")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, functions=[function], ir_version=10, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("ai.harmonizer", 1)])


def _run_relax(mod, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    executable = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_custom_relu_is_not_converted_as_the_builtin():
    from tvm import relax

    from harmonizer_deploy.core.onnxruntime import ort_session
    from harmonizer_deploy.custom_ops.tvm_prepare import import_relax
    from harmonizer_deploy.frontend.hook import from_onnx_with_converters

    model = _custom_relu_model()
    x = np.array([[-2.0, 0.5, 3.0], [1.0, -1.0, 0.0]], np.float32)
    (expected,) = ort_session(model).run(None, {"x": x})
    np.testing.assert_allclose(expected, x - 1.0)
    # without a converter for (ai.harmonizer, Relu): refused, naming the op
    with pytest.raises(HarmonizerError, match=r"no TVM converter for custom-domain ops: ai\.harmonizer::Relu"):
        import_relax(model, {})

    def minus_one(bb, inputs, attrs, ctx):
        assert (ctx.domain, ctx.op_type, ctx.opset) == ("ai.harmonizer", "Relu", 1)
        return relax.op.subtract(inputs[0], relax.const(1.0, "float32"))

    mod = from_onnx_with_converters(model, {("ai.harmonizer", "Relu"): minus_one})
    np.testing.assert_allclose(_run_relax(mod, x), expected)
    assert not np.allclose(_run_relax(mod, x), np.maximum(x, 0))


def test_registered_converter_does_not_shadow_the_builtin():
    """A converter for ai.harmonizer::Relu leaves default-domain Relu nodes to TVM's own converter."""
    from onnx import TensorProto, helper
    from tvm import relax

    from harmonizer_deploy.frontend.hook import from_onnx_with_converters

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def wrong(bb, inputs, attrs, ctx):
        return relax.op.negative(inputs[0])

    mod = from_onnx_with_converters(model, {("ai.harmonizer", "Relu"): wrong})
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(_run_relax(mod, x), [0.0, 0.0, 2.0])


def test_cli_ops_scan_json_and_convert_strategy_option(variant_keras, tmp_path):
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["ops", "scan", str(variant_keras), "--no-tvm", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert set(report["breaks"]) == {"melody_attention", "logsumexp_pool"}
    result = runner.invoke(app, ["convert", str(variant_keras), "-o", str(tmp_path / "m.onnx"),
                                 "--custom-op-strategy", "none"])
    assert result.exit_code == 2
    assert "CumulativeLogsumexp" in result.output
    result = runner.invoke(app, ["convert", str(variant_keras), "-o", str(tmp_path / "m.onnx"),
                                 "--custom-op-strategy", "decompose", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["custom_ops"].values()) == {"decompose"}


def test_saved_model_tf_op_entry_without_keras(tmp_path):
    """A bare SavedModel has no Keras layers, but the TF op CumulativeLogsumexp is still found and handled."""
    import keras

    from harmonizer_deploy.coverage.ops_scan import scan
    from harmonizer_deploy.music.config import ModelConfig
    from harmonizer_deploy.music.model import build_model, seeded_weights, set_weights

    cfg = ModelConfig(name="pool", num_layers=4, num_filters=8, logsumexp_pool_after=1)
    model = build_model(cfg)
    set_weights(model, cfg, seeded_weights(cfg, seed=4))
    model.save(tmp_path / "pool.keras")
    keras.models.load_model(tmp_path / "pool.keras").export(tmp_path / "saved", verbose=False)
    with pytest.raises(HarmonizerError, match="CumulativeLogsumexp"):
        hd.convert(tmp_path / "saved", tmp_path / "none.onnx", custom_op_strategy="none")
    result = hd.convert(tmp_path / "saved", tmp_path / "m.onnx", custom_op_strategy="custom-op")
    assert result.custom_ops == {"CumulativeLogsumexp": "custom-op"} and result.max_abs_err <= 1e-5
    (report,) = scan(tmp_path / "saved", check_tvm=False)
    assert report.kind == "saved_model" and report.tf2onnx_unsupported == ["CumulativeLogsumexp"]
    (row,) = [r for r in report.rows if "CumulativeLogsumexp" in r.tf_ops]
    assert row.breaks and row.strategies == ["rewrite", "custom-op", "decompose"]


def test_compile_refuses_custom_domain_node_without_converter(tmp_path):
    """compile on a model with ai.harmonizer::Relu (no registry entry): one line naming the op and the fix."""
    from typer.testing import CliRunner

    from harmonizer_deploy.cli import app

    onnx.save(_custom_relu_model(), tmp_path / "relu.onnx")
    result = CliRunner().invoke(app, ["compile", str(tmp_path / "relu.onnx"), "--target", "cpu",
                                      "-o", str(tmp_path / "cpu")])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "ai.harmonizer::Relu" in line and "--custom-op-strategy" in line
    assert not (tmp_path / "cpu").exists()


def test_saved_model_layer_without_keras_is_named_with_the_fix(tmp_path):
    """A bare SavedModel of the attention variant: the registry's layer strategies need Keras; convert says so."""
    import keras

    from harmonizer_deploy.music.config import ModelConfig
    from harmonizer_deploy.music.model import build_model, seeded_weights, set_weights

    cfg = ModelConfig(name="attn", num_layers=4, num_filters=8, melody_attention_after=1, attention_key_dim=4)
    model = build_model(cfg)
    set_weights(model, cfg, seeded_weights(cfg, seed=2))
    model.save(tmp_path / "attn.keras")
    keras.models.load_model(tmp_path / "attn.keras").export(tmp_path / "saved", verbose=False)
    with pytest.raises(HarmonizerError) as info:
        hd.convert(tmp_path / "saved", tmp_path / "m.onnx")
    message = info.value.one_line()
    assert "melody_attention" in message and "SavedModel" in message and ".keras" in message
    assert "\n" not in message and not (tmp_path / "m.onnx").exists()


def test_variant_custom_op_model_without_registry_converters_is_refused_by_tvm_import(variant_builds):
    """The same variant's custom-op ONNX, imported without the registry's converters: refused, every op named."""
    from harmonizer_deploy.custom_ops.tvm_prepare import import_relax, prepare_for_tvm

    prepared, _ = prepare_for_tvm(onnx.load(str(variant_builds["custom-op"][0] / "model.onnx")))
    with pytest.raises(HarmonizerError) as info:
        import_relax(prepared, {})
    problem, ops = info.value.problem.split(": ", 1)
    assert problem == "no TVM converter for custom-domain ops"
    assert set(ops.split(", ")) == {"ai.harmonizer::CumulativeLogsumexp", "ai.harmonizer::MelodyHarmonyAttention",
                                    "ai.harmonizer::PitchMaskedSoftmax"}
