"""The CPU pipeline's hand schedules: right answers on awkward shapes, and they really apply (no silent fallback)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def conv_model(cin: int, cout: int, kernel: int, auto_pad: str, dilation: int = 1, residual: bool = False,
               width: int = 46, seed: int = 0) -> onnx.ModelProto:
    """[batch, time, width, cin] (NHWC, like the harmonizer) → Conv (+ bias, ReLU, residual) → NHWC."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(0, 0.2, (cout, cin, kernel, kernel)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.2, cout).astype(np.float32), "b")
    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], kernel_shape=[kernel, kernel],
                              dilations=[dilation, dilation], auto_pad=auto_pad)
             if auto_pad != "NOTSET" else  # onnxruntime rejects dilation with SAME_*: explicit pads
             helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], kernel_shape=[kernel, kernel],
                              dilations=[dilation, dilation], pads=[dilation * (kernel - 1) // 2] * 4),
             helper.make_node("Relu", ["conv"], ["act"])]
    last = "act"
    if residual:
        nodes.append(helper.make_node("Add", ["act", "nchw"], ["sum"]))
        last = "sum"
    nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", width, cin])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run_cpu_pipeline(model: onnx.ModelProto, x: np.ndarray, fix_dims: dict | None,
                     winograd: bool | None = None, machine: str | None = None) -> tuple[np.ndarray, dict]:
    """Compile with the cpu target's pipeline (its `[options] winograd` and vector machine unless overridden)
    and run once."""
    import dataclasses

    import tvm
    from tvm import relax

    from harmonizer_deploy.compiler.executable import build_executable
    from harmonizer_deploy.compiler.pipelines import get_pipeline
    from harmonizer_deploy.compiler.relax_import import import_onnx
    from harmonizer_deploy.compiler.scheduling import ScheduleReport
    from harmonizer_deploy.compiler.targets import load_target
    from harmonizer_deploy.core.cpus import use_all_cpu_cores
    from harmonizer_deploy.run.tvm import prepare_params

    use_all_cpu_cores()
    spec = load_target("cpu")
    if winograd is not None:
        spec = dataclasses.replace(spec, options={**spec.options, "winograd": winograd})
    if machine is not None:
        spec = dataclasses.replace(spec, options={**spec.options, "vector_machine": machine})
    target = spec.tvm_target()
    mod, _names, arrays, _report = import_onnx(model, fix_dims)
    schedules = ScheduleReport()
    executable = build_executable(mod, target, pipeline=get_pipeline("cpu")(spec, target, schedules))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()), *prepare_params(vm, arrays, tvm.cpu()))
    return out.numpy(), schedules.functions


WINOGRAD, DIRECT = "winograd-row-tasks", "conv2d-nhwc-register-tile"
CASES = [  # cin, cout, kernel, auto_pad, dilation, residual, width, batch, time, schedule
    (64, 64, 3, "SAME_UPPER", 1, True, 46, 1, 32, WINOGRAD),  # the default model's main layer
    (64, 64, 3, "SAME_UPPER", 1, False, 46, 3, 7, WINOGRAD),  # odd time: the last tile row is half outside
    (16, 48, 3, "SAME_LOWER", 1, False, 13, 2, 1, WINOGRAD),  # width 13: last tile 1 of 4 columns; 48 channels
    (8, 64, 3, "SAME_UPPER", 1, False, 46, 3, 7, DIRECT),     # first layer (8 inputs: no full vector); odd b x t
    (64, 4, 2, "SAME_UPPER", 1, False, 46, 2, 5, DIRECT),     # last layer: 2x2 kernel, 4 outputs, uneven padding
    (20, 24, 3, "SAME_LOWER", 1, False, 15, 1, 9, DIRECT),    # channels not a multiple of 16, odd width
    (64, 64, 3, "NOTSET", 2, True, 46, 1, 8, DIRECT),         # dilation 2 (explicit pads): not Winograd's case
    (32, 32, 2, "SAME_LOWER", 1, True, 11, 2, 6, DIRECT),     # residual after a 2x2 kernel, narrow width
]


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}to{c[1]}k{c[2]}{c[3][:6]}d{c[4]}w{c[6]}b{c[7]}t{c[8]}")
def test_scheduled_conv_matches_onnxruntime(case, static):
    cin, cout, kernel, pad, dilation, residual, width, batch, steps, schedule = case
    model = conv_model(cin, cout, kernel, pad, dilation, residual, width)
    x = np.random.default_rng(1).normal(size=(batch, steps, width, cin)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got, report = run_cpu_pipeline(model, x, {"batch": batch, "time": steps} if static else None)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    conv_kernels = {name: how for name, how in report.items() if "conv2d" in name}
    assert conv_kernels and set(conv_kernels.values()) == {schedule}, report


def separable_model(channels: int, kernel: int, dilation: tuple[int, int], pads: list[int], width: int,
                    pointwise_groups: int = 0, residual: bool | str = False, seed: int = 0) -> onnx.ModelProto:
    """The Doodle's layer at a test size: NHWC → depthwise Conv (group = channels, dilated, explicit pads, no
    bias) → [pointwise 1x1 Conv with `pointwise_groups` groups + bias → ReLU (+ residual)] → NHWC."""
    rng = np.random.default_rng(seed)
    depthwise = numpy_helper.from_array(rng.normal(0, 0.3, (channels, 1, kernel, kernel)).astype(np.float32), "dw")
    weights = [depthwise]
    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "dw"], ["depthwise"], kernel_shape=[kernel, kernel],
                              dilations=list(dilation), pads=pads, group=channels)]
    last = "depthwise"
    if pointwise_groups:
        weights += [numpy_helper.from_array(rng.normal(0, 0.3, (channels, channels // pointwise_groups, 1, 1))
                                            .astype(np.float32), "pw"),
                    numpy_helper.from_array(rng.normal(0, 0.3, channels).astype(np.float32), "b")]
        nodes += [helper.make_node("Conv", ["depthwise", "pw", "b"], ["pointwise"], kernel_shape=[1, 1],
                                   group=pointwise_groups),
                  helper.make_node("Relu", ["pointwise"], ["act"])]
        last = "act"
        if residual:  # "depthwise": the skip reads the depthwise output too, so it must stay its own kernel
            nodes.append(helper.make_node("Add", ["act", "depthwise" if residual == "depthwise" else "nchw"],
                                          ["sum"]))
            last = "sum"
    nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes, "separable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", width, channels])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


DEPTHWISE, SEPARABLE = "depthwise-nhwc-pixel-runs", "separable-register-tile"
SEPARABLE_CASES = [  # channels, kernel, dilation, pads, width, pointwise groups, residual, batch, time, schedules
    (32, 3, (16, 32), [16, 32, 16, 32], 46, 0, False, 1, 8, {DEPTHWISE}),  # the Doodle's widest: taps mostly outside
    (16, 3, (2, 4), [2, 4, 2, 4], 13, 0, False, 2, 5, {DEPTHWISE}),       # odd width, dilation > time / 2
    (8, 2, (1, 1), [0, 0, 1, 1], 46, 0, False, 3, 7, {DEPTHWISE}),        # 2x2 taps, padding only after; 8 lanes
    (12, 3, (1, 1), [1, 1, 1, 1], 9, 0, False, 2, 3, {DEPTHWISE}),        # 12 channels: no full 16-lane vector
    (32, 3, (4, 4), [4, 4, 4, 4], 46, 4, True, 2, 6, {SEPARABLE}),  # + split 1x1 (4 groups), residual: one kernel
    (16, 3, (8, 8), [8, 8, 8, 8], 46, 1, False, 1, 32, {SEPARABLE}),  # + dense 1x1, bias, ReLU
    (8, 2, (1, 1), [1, 0, 0, 1], 13, 1, False, 2, 5, {SEPARABLE}),   # 2x2 taps, uneven pads, 8 channels
    (64, 3, (1, 2), [1, 2, 1, 2], 130, 1, False, 1, 3, {SEPARABLE}),  # a row's depthwise > L1 budget: per tile
    (32, 3, (2, 2), [2, 2, 2, 2], 46, 4, "depthwise", 1, 4, {DEPTHWISE, DIRECT}),  # depthwise read twice: 2 kernels
]


@pytest.mark.parametrize("machine", ["avx512", "wasm-simd128"])
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", SEPARABLE_CASES,
                         ids=lambda c: f"c{c[0]}k{c[1]}d{c[2][0]}x{c[2][1]}w{c[4]}g{c[5]}b{c[7]}t{c[8]}")
def test_scheduled_separable_conv_matches_onnxruntime(case, static, machine):
    """Depthwise (dilated) and grouped 1x1 convolutions get their hand schedules, for the x86 tiles and for the
    wasm ones (built for this CPU here: the schedule is the same TIR), and match onnxruntime."""
    channels, kernel, dilation, pads, width, groups, residual, batch, steps, schedules = case
    model = separable_model(channels, kernel, dilation, pads, width, groups, residual)
    x = np.random.default_rng(1).normal(size=(batch, steps, width, channels)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got, report = run_cpu_pipeline(model, x, {"batch": batch, "time": steps} if static else None,
                                   machine=machine)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    conv_kernels = {name: how for name, how in report.items() if "conv2d" in name}
    assert conv_kernels and set(conv_kernels.values()) == schedules, report
    if schedules == {SEPARABLE}:  # depthwise + pointwise became one kernel, not two
        assert len(conv_kernels) == 1, report


def test_winograd_off_gives_the_direct_convolution():
    """`[options] winograd = false`: the same 3x3 layer stays a direct convolution, with the same answer."""
    model = conv_model(64, 64, 3, "SAME_UPPER", residual=True)
    x = np.random.default_rng(2).normal(size=(1, 9, 46, 64)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got, report = run_cpu_pipeline(model, x, None, winograd=False)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert {how for name, how in report.items() if "conv2d" in name} == {DIRECT}, report
    assert not [name for name in report if "winograd" in name], report


@pytest.mark.parametrize("outputs", [2, 4])
def test_winograd_transforms_compute_a_correlation(outputs):
    """A^T [(G g) * (B^T d)] equals the 3-tap correlation of d with g: the matrices themselves are right."""
    from harmonizer_deploy.compiler.cpu.winograd import TRANSFORMS

    a_t, g, b_t = TRANSFORMS[outputs]
    rng = np.random.default_rng(outputs)
    for _ in range(20):
        data, taps = rng.normal(size=outputs + 2), rng.normal(size=3)
        expected = [data[i:i + 3] @ taps for i in range(outputs)]
        np.testing.assert_allclose(a_t @ ((g @ taps) * (b_t @ data)), expected, rtol=1e-12, atol=1e-12)


def _conv_schedules(manifest_path) -> dict[str, str]:
    import json

    functions = json.loads(manifest_path.read_text())["schedules"]["functions"]
    assert not [how for how in functions.values() if how.startswith("default (")], functions
    return {name: how for name, how in functions.items() if "conv2d" in name}


def test_tiny_model_kernels_all_get_a_schedule(built):
    """Every convolution of the compiled tiny model (8 filters: too few channels for Winograd) is
    hand-scheduled; none fell back silently."""
    convs = _conv_schedules(built / "cpu" / "manifest.json")
    assert convs and set(convs.values()) == {DIRECT}, convs


def test_bundled_model_runs_its_3x3_layers_as_winograd_and_verifies(bundled_onnx, tmp_path):
    """The bundled model: its 13 3x3 64->64 layers (two fused kernel variants) are Winograd kernels, the 8-input
    first layer and the 2x2 layers direct convolutions, and the artifact matches onnxruntime."""
    from harmonizer_deploy import compile, verify

    onnx_path, _ = bundled_onnx
    compile(onnx_path, "cpu", tmp_path / "cpu")
    convs = _conv_schedules(tmp_path / "cpu" / "manifest.json")
    winograd = {name for name, how in convs.items() if how == WINOGRAD}
    assert len(winograd) == 2 and all("winograd" in name for name in winograd), convs
    assert set(convs.values()) == {WINOGRAD, DIRECT}, convs
    report = verify(tmp_path / "cpu", "cpu", num_inputs=2)
    assert report.passed, report


@pytest.mark.parametrize(("kernel", "dilation", "mode", "pads"), [
    (3, 1, "SAME_UPPER", [1, 1, 1, 1]), (2, 1, "SAME_UPPER", [0, 0, 1, 1]), (2, 1, "SAME_LOWER", [1, 1, 0, 0]),
    (3, 2, "SAME_UPPER", [2, 2, 2, 2]),
])
def test_explicit_same_padding_is_equivalent(kernel, dilation, mode, pads):
    from harmonizer_deploy.custom_ops.tvm_prepare import explicit_same_padding

    model = conv_model(4, 4, kernel, mode, dilation)
    rewritten, changed = explicit_same_padding(model)
    assert changed == 1
    conv = next(n for n in rewritten.graph.node if n.op_type == "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert "auto_pad" not in attrs and list(attrs["pads"]) == pads
    if dilation > 1:  # onnxruntime refuses dilation with SAME_*: the pads above are the check
        return
    x = np.random.default_rng(0).normal(size=(1, 5, 46, 4)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)


def test_explicit_same_padding_leaves_strided_convs_alone():
    """With strides > 1 SAME pads depend on the input size, which may be symbolic: not rewritten."""
    from harmonizer_deploy.custom_ops.tvm_prepare import explicit_same_padding

    model = conv_model(4, 4, 3, "SAME_UPPER")
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("strides", [2, 2]))
    _, changed = explicit_same_padding(model)
    assert changed == 0


def test_thread_pool_uses_every_core_unless_told(monkeypatch):
    from harmonizer_deploy.core import cpus as runtime

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    runtime.use_all_cpu_cores()
    assert int(__import__("os").environ["TVM_NUM_THREADS"]) == runtime.physical_cores() >= 1
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    runtime.use_all_cpu_cores()
    assert __import__("os").environ["TVM_NUM_THREADS"] == "1"


def test_onnxruntime_backend_parks_its_threads(built):
    from harmonizer_deploy.run.backends import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(built / "model.onnx")
    options = backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
