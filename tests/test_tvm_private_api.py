"""Guards for the private TVM pieces tvm_hook.py and ops_scan.py use: fail loudly when they move."""

from __future__ import annotations

import inspect

import numpy as np


def test_onnx_graph_importer_shape():
    from tvm.relax.frontend.onnx import onnx_frontend

    importer = onnx_frontend.ONNXGraphImporter
    params = list(inspect.signature(importer.__init__).parameters)
    assert params[:5] == ["self", "shape_dict", "dtype_dict", "keep_params_in_input", "sanitize"], params
    for name in ("from_onnx", "_convert_operator", "_check_for_unsupported_ops", "_construct_nodes"):
        assert callable(getattr(importer, name)), name
    assert list(inspect.signature(importer._convert_operator).parameters) == [
        "self", "op_name", "inputs", "attrs", "opset"]
    # dispatch goes through self._convert_operator with the node's op_type: the hook's override point
    assert "self._convert_operator(op_name" in inspect.getsource(importer._construct_nodes)
    assert "_check_for_unsupported_ops(graph)" in inspect.getsource(importer.from_onnx)
    assert isinstance(onnx_frontend._get_convert_map(), dict) and "Relu" in onnx_frontend._get_convert_map()


def test_tvm_still_ignores_node_domains():
    """Why the hook exists: plain from_onnx imports ai.harmonizer::Relu as the built-in Relu. If this starts
    failing, TVM learned about domains: revisit tvm_hook.py."""
    import tvm
    from onnx import TensorProto, helper
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], domain="ai.harmonizer")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.harmonizer", 1)])
    vm = relax.VirtualMachine(tvm.compile(from_onnx(model), target="llvm"), tvm.cpu())
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), [0.0, 0.0, 2.0])
