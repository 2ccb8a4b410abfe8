"""Fail loudly if the private TVM ONNX-frontend API that `tvm_hook` (and `ops_scan`) rely on moves or changes shape."""

from __future__ import annotations

import inspect

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend.onnx import onnx_frontend  # noqa: E402

from harmonizer_deploy.frontend import hook as tvm_hook  # noqa: E402


def test_convert_map_is_a_module_function_returning_a_dict() -> None:
    assert callable(getattr(onnx_frontend, "_get_convert_map", None)), "onnx_frontend._get_convert_map is gone"
    assert not inspect.signature(onnx_frontend._get_convert_map).parameters, "_get_convert_map now takes arguments"
    table = onnx_frontend._get_convert_map()
    assert isinstance(table, dict) and "Relu" in table
    assert callable(table["Relu"].get_converter), "converters no longer expose get_converter(opset)"


def test_importer_looks_the_map_up_by_global_name() -> None:
    # The hook swaps the module global; that only works while these methods read it at call time.
    importer = onnx_frontend.ONNXGraphImporter
    for method in ("_convert_operator", "_check_for_unsupported_ops"):
        names = getattr(importer, method).__code__.co_names
        assert "_get_convert_map" in names, f"ONNXGraphImporter.{method} no longer calls _get_convert_map"
    params = list(inspect.signature(importer._convert_operator).parameters)
    assert params == ["self", "op_name", "inputs", "attrs", "opset"], params


def test_importer_dispatches_on_the_node_op_type() -> None:
    # The hook renames nodes (op_type → mangled name); that only works while dispatch is by op_type alone
    # and every graph goes through the unsupported-op check and _convert_operator.
    importer = onnx_frontend.ONNXGraphImporter
    assert "self._convert_operator(op_name" in inspect.getsource(importer._construct_nodes)
    assert "_check_for_unsupported_ops(graph)" in inspect.getsource(importer.from_onnx)


def test_converter_call_convention() -> None:
    # TVM calls converters as fn(bb, inputs, attrs, [nodes, params]); our adapter depends on it.
    src = inspect.getsource(onnx_frontend.ONNXGraphImporter._convert_operator)
    assert "op_function(self.bb, inputs, attrs, [self._nodes, self._params])" in src


def test_from_onnx_signature() -> None:
    params = inspect.signature(relax.frontend.onnx.from_onnx).parameters
    for name in ("model", "shape_dict", "dtype_dict", "opset", "keep_params_in_input"):
        assert name in params, f"from_onnx lost its {name} parameter"


def _two_relus() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"], domain="ai.harmonizer"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.harmonizer", 3)]
    )


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_domain_qualified_converter_does_not_touch_builtin() -> None:
    seen: list[tvm_hook.ConvertContext] = []

    def negate(bb, inputs, attrs, ctx):  # a custom "Relu" that is really negation
        seen.append(ctx)
        return relax.op.negative(inputs[0])

    x = np.array([-2.0, -1.0, 1.0, 2.0], dtype="float32")
    mod = tvm_hook.from_onnx_with_converters(_two_relus(), {("ai.harmonizer", "Relu"): negate})
    np.testing.assert_array_equal(_run(mod, x), -np.maximum(x, 0))
    assert [(c.domain, c.op_type, c.opset) for c in seen] == [("ai.harmonizer", "Relu", 3)]
    # Outside the call the frontend's map is the original again.
    assert not any(k.startswith("__harmonizer__") for k in onnx_frontend._get_convert_map())


def test_without_hook_tvm_ignores_the_domain() -> None:
    # Documents the frontend behaviour the hook exists for; if TVM starts honouring domains this fails.
    x = np.array([-2.0, -1.0, 1.0, 2.0], dtype="float32")
    mod = relax.frontend.onnx.from_onnx(_two_relus())
    np.testing.assert_array_equal(_run(mod, x), np.maximum(x, 0))
    assert tvm_hook.foreign_domain_nodes(_two_relus()) == [("ai.harmonizer", "Relu")]


@pytest.mark.filterwarnings("ignore:No Op registered for __harmonizer__")  # TVM's checker on the renamed node
def test_default_domain_extra_converter_takes_precedence() -> None:
    # The registry fills gaps in TVM's map with ("", op_type) converters (e.g. the standard GRU): an extra
    # converter for a default-domain op must win over TVM's own one, and only inside the call.
    def negate(bb, inputs, attrs, ctx):
        assert (ctx.domain, ctx.op_type, ctx.opset) == ("", "Relu", 17) and len(ctx.params) == 2
        return relax.op.negative(inputs[0])

    x = np.array([-2.0, -1.0, 1.0, 2.0], dtype="float32")
    mod = tvm_hook.from_onnx_with_converters(_two_relus(), {("ai.onnx", "Relu"): negate})
    # the default-domain Relu is negated, the ai.harmonizer::Relu (no extra converter) stays TVM's Relu
    np.testing.assert_array_equal(_run(mod, x), np.maximum(-x, 0))
    assert tvm_hook.foreign_domain_nodes(_two_relus(), {("ai.harmonizer", "Relu")}) == []


def test_graph_input_parsing_that_untyped_inputs_rely_on() -> None:
    # frontend/hook.py (_object_inputs) wraps ONNXGraphImporter._parse_graph_input(self, graph) and then rewrites
    # self._nodes / self._inputs per input name, using self._sanitize / self._sanitize_name for the var name.
    importer = onnx_frontend.ONNXGraphImporter
    assert callable(getattr(importer, "_parse_graph_input", None)), "ONNXGraphImporter._parse_graph_input is gone"
    assert list(inspect.signature(importer._parse_graph_input).parameters) == ["self", "graph"]
    assert "self._parse_graph_input(graph)" in inspect.getsource(importer.from_onnx), (
        "from_onnx no longer parses graph inputs through _parse_graph_input")
    src = inspect.getsource(importer._parse_graph_input)
    for name in ("self._nodes[i_name]", "self._inputs[i_name]", "self._sanitize_name(i_name)", "self._sanitize"):
        assert name in src, f"_parse_graph_input no longer uses {name}"
