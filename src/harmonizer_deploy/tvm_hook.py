"""Domain-aware Relax ONNX import: extra converters keyed by (domain, op_type), without patching TVM.

TVM 0.27's `from_onnx` looks converters up by `op_type` alone, so a node `ai.harmonizer::Relu` would be
imported as the built-in Relu, silently wrong. Here every node outside the default ONNX domain must have a
registered converter, or the import fails naming it. The private pieces used (`ONNXGraphImporter`,
`_convert_operator`, `_check_for_unsupported_ops`) are guarded by tests/test_tvm_private_api.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import HarmonizerError

DEFAULT_DOMAINS = ("", "ai.onnx")
# A converter takes what TVM's own converters take: (block builder, inputs, attributes, [nodes, params]).
Converter = Callable[[Any, list[Any], dict[str, Any], list[Any]], Any]
_SEP = "::"


def qualified_name(domain: str, op_type: str) -> str:
    return f"{domain}{_SEP}{op_type}"


def _importer_class() -> type:
    from tvm.relax.frontend.onnx import onnx_frontend

    base = onnx_frontend.ONNXGraphImporter

    class DomainAwareImporter(base):
        """Looks up `domain::op_type` names in `self._extra` before TVM's own map."""

        _extra: Mapping[str, Converter] = {}

        def _check_for_unsupported_ops(self, graph: Any) -> None:
            standard = type(graph)()
            standard.CopyFrom(graph)
            del standard.node[:]
            standard.node.extend(n for n in graph.node if n.op_type not in self._extra)
            super()._check_for_unsupported_ops(standard)

        def _convert_operator(self, op_name: str, inputs: list[Any], attrs: dict, opset: int) -> Any:
            if op_name in self._extra:
                sym = self._extra[op_name](self.bb, inputs, attrs, [self._nodes, self._params])
                from tvm import relax

                return self.bb.normalize(sym) if isinstance(sym, relax.Expr) else sym
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return DomainAwareImporter


def from_onnx_with_converters(
    model: Any, converters: Mapping[tuple[str, str], Converter], **from_onnx_kwargs: Any
) -> Any:
    """`tvm.relax.frontend.onnx.from_onnx` plus converters for (domain, op_type); non-default domains need one.

    The model is copied; in the copy each custom-domain node's op_type becomes `domain::op_type`, so TVM's
    op_type-only dispatch can never mistake it for a built-in of the same name.
    """
    import onnx

    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    missing = sorted({qualified_name(n.domain, n.op_type) for n in model_copy.graph.node
                      if n.domain not in DEFAULT_DOMAINS and (n.domain, n.op_type) not in converters})
    # ("", op_type) converters fill gaps in TVM's map for standard ops (e.g. GRU); they are used as given
    if missing:
        raise HarmonizerError(
            f"no TVM converter for custom-domain ops: {', '.join(missing)}",
            "register a converter for (domain, op_type), decompose them into standard ops, or rewrite the layer",
        )
    extra: dict[str, Converter] = {}
    for node in model_copy.graph.node:
        domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
        if domain or (domain, node.op_type) in converters:
            key = qualified_name(domain, node.op_type)
            extra[key] = converters[(domain, node.op_type)]
            node.op_type = key
            node.domain = ""
    importer_cls = _importer_class()
    importer_cls._extra = extra
    opset = from_onnx_kwargs.pop("opset", None) or _default_opset(model_copy)
    importer = importer_cls(
        from_onnx_kwargs.pop("shape_dict", None),
        from_onnx_kwargs.pop("dtype_dict", "float32"),
        keep_params_in_input=from_onnx_kwargs.pop("keep_params_in_input", False),
        sanitize=from_onnx_kwargs.pop("sanitize_input_names", True),
    )
    if from_onnx_kwargs:
        raise TypeError(f"unexpected from_onnx arguments: {', '.join(from_onnx_kwargs)}")
    return importer.from_onnx(model_copy.graph, opset)


def _default_opset(model: Any) -> int:
    """The default-domain opset, as TVM's from_onnx finds it (it never reads other domains' versions)."""
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return 1
