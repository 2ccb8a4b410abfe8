"""Register extra Relax ONNX converters keyed by (domain, op_type), without editing TVM's files.

Why this exists: TVM 0.27's `relax.frontend.onnx.from_onnx` looks converters up by bare `op_type`
(node domains are ignored, so `com.microsoft::Attention` and opset-23 `Attention` share one converter,
and a custom `ai.harmonizer::Relu` would silently become the built-in Relu). This module:

1. copies the model and renames every node whose (domain, op_type) has an extra converter to a
   private mangled op_type (subgraphs included), so the lookup is domain-qualified;
2. for the duration of the call, swaps the frontend's module-level `_get_convert_map` for one that
   also knows the mangled names, and makes sequence/optional graph inputs untyped parameters.

The private TVM API this relies on is pinned by `tests/test_tvm_private_api.py`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import onnx

DEFAULT_DOMAIN = ""
_DEFAULT_ALIASES = {"", "ai.onnx"}
_MANGLE_PREFIX = "__harmonizer__"
_LOCK = threading.RLock()


@dataclass(frozen=True)
class ConvertContext:
    """What a converter may need besides inputs and attributes."""

    domain: str
    op_type: str
    opset: int  # the model's opset for this node's domain (ai.onnx opset for the default domain)
    params: Any  # TVM's `[nodes, params]` pair, as its own converters receive it (for get_constant)


# A converter: (block_builder, inputs, attrs, context) -> relax.Expr (or a relax.Tuple for several outputs).
Converter = Callable[[Any, list, dict, ConvertContext], Any]
ConverterKey = tuple[str, str]


def normalize_domain(domain: str) -> str:
    """ONNX treats "" and "ai.onnx" as the same default domain."""
    return DEFAULT_DOMAIN if domain in _DEFAULT_ALIASES else domain


def mangled_name(domain: str, op_type: str) -> str:
    """The op_type a (domain, op_type) node carries while TVM imports it."""
    dom = normalize_domain(domain).replace(".", "_") or "ai_onnx"
    return f"{_MANGLE_PREFIX}{dom}__{op_type}"


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node's attributes hold (If branches, Loop/Scan bodies), in attribute order."""
    found: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def as_exported(graph: onnx.GraphProto) -> onnx.GraphProto:
    """A copy of `graph` with the op types `mangled_name` gave its nodes (and its subgraphs' nodes) restored.

    Why: converters' `applies_to` predicates run while nodes are being renamed, and ONNX shape inference cannot
    follow a renamed node, so the types and shapes downstream of one would come out unknown."""
    copy = onnx.GraphProto()
    copy.CopyFrom(graph)
    _restore_op_types(copy)
    return copy


def _restore_op_types(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if node.op_type.startswith(_MANGLE_PREFIX):  # the domain was never changed, only the op type
            node.op_type = node.op_type.rpartition("__")[2]
        for sub in subgraphs(node):
            _restore_op_types(sub)


def _frontend() -> Any:
    from tvm.relax.frontend.onnx import onnx_frontend

    return onnx_frontend


def tvm_onnx_op_types() -> set[str]:
    """The ONNX op types TVM's own frontend has a converter for (its private convert map)."""
    return set(_frontend()._get_convert_map())


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {normalize_domain(o.domain): int(o.version) for o in model.opset_import}


def _rename_nodes(
    graph: onnx.GraphProto,
    keys: set[ConverterKey],
    applies: Mapping[ConverterKey, Callable[[onnx.NodeProto, onnx.GraphProto], bool]] | None = None,
) -> int:
    """Rename matching nodes in `graph` and every subgraph; returns how many were renamed.

    `applies` (optional, per key) narrows which nodes of that (domain, op_type) are taken over; the others
    keep TVM's converter.
    """
    count = 0
    applies = applies or {}
    for node in graph.node:
        key = (normalize_domain(node.domain), node.op_type)
        if key in keys and (key not in applies or applies[key](node, graph)):
            node.op_type = mangled_name(*key)
            count += 1
        for sub in subgraphs(node):
            count += _rename_nodes(sub, keys, applies)
    return count


def _adapter(key: ConverterKey, fn: Converter, opset: int) -> type:
    """Wrap `fn` as the class-with-get_converter shape TVM's convert map holds."""
    domain, op_type = key

    def _impl(bb: Any, inputs: list, attrs: dict, params: Any) -> Any:
        return fn(bb, inputs, attrs, ConvertContext(domain, op_type, opset, params))

    class _Adapter:
        @classmethod
        def get_converter(cls, _model_opset: int) -> Callable[..., Any]:
            return _impl

    _Adapter.__name__ = mangled_name(domain, op_type)
    return _Adapter


def untyped_input(vi: onnx.ValueInfoProto) -> bool:
    """A graph input of sequence type or optional-of-sequence type (the pack makes it an untyped parameter).

    An optional tensor stays a Tensor parameter: TVM decides OptionalHasElement at import as "present", which
    is right only while the VM refuses an empty value for it.
    """
    kind = vi.type.WhichOneof("value")
    if kind == "optional_type":
        return vi.type.optional_type.elem_type.WhichOneof("value") == "sequence_type"
    return kind == "sequence_type"


def _non_tensor_inputs(importer: Any, graph: onnx.GraphProto) -> None:
    """Graph inputs of sequence or optional-sequence type become untyped parameters (R.Any).

    Why: TVM makes every graph input a Tensor parameter, so a model whose input is a sequence (or an optional)
    compiles but its VM call refuses the value it was built for. An untyped parameter takes the runtime's
    array of tensors as it is, so ops that pass it through (Identity) work; ops that read its elements are not
    helped by this (they need a sequence of known length).
    """
    from tvm import relax

    for vi in graph.input:
        if untyped_input(vi) and vi.name in importer._inputs:
            name = importer._sanitize_name(vi.name) if importer._sanitize else vi.name
            var = relax.Var(name, relax.ObjectType())
            importer._nodes[vi.name] = importer._inputs[vi.name] = var


@contextlib.contextmanager
def _object_inputs() -> Iterator[None]:
    """While the block runs, the importer gives sequence/optional-sequence graph inputs untyped parameters."""
    importer = _frontend().ONNXGraphImporter
    original = importer._parse_graph_input

    def parse(self: Any, graph: onnx.GraphProto) -> None:
        original(self, graph)
        _non_tensor_inputs(self, graph)

    with _LOCK:
        importer._parse_graph_input = parse
        try:
            yield
        finally:
            importer._parse_graph_input = original


@contextlib.contextmanager
def converters_installed(extra: Mapping[ConverterKey, Converter], opsets: Mapping[str, int]) -> Iterator[None]:
    """Make TVM's convert map also answer the mangled names of `extra` while the block runs."""
    fe = _frontend()
    original = fe._get_convert_map
    added = {
        mangled_name(*key): _adapter(key, fn, opsets.get(normalize_domain(key[0]), 1)) for key, fn in extra.items()
    }

    def patched() -> dict[str, Any]:
        table = original()
        table.update(added)
        return table

    with _LOCK:
        fe._get_convert_map = patched
        try:
            yield
        finally:
            fe._get_convert_map = original


def from_onnx_with_converters(
    model: onnx.ModelProto, extra_converters: Mapping[ConverterKey, Converter] | None = None, **kwargs: Any
) -> Any:
    """`tvm.relax.frontend.onnx.from_onnx`, with domain-qualified extra converters taking precedence.

    Keys are (domain, op_type); "" and "ai.onnx" are the same domain. Nodes of other domains that have no
    extra converter are left as they are (TVM will then treat them by op_type alone, as it always does).
    A converter with an `applies_to(node, graph) -> bool` attribute takes over only the nodes it accepts
    (e.g. Cast to float8 only: renaming every Cast would cost TVM's ShapeExpr handling of Cast).
    """
    from tvm.relax.frontend.onnx import from_onnx

    extra = {(normalize_domain(d), op): fn for (d, op), fn in (extra_converters or {}).items()}
    if not extra:
        return from_onnx(model, **kwargs)
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    applies = {key: fn.applies_to for key, fn in extra.items() if callable(getattr(fn, "applies_to", None))}
    _rename_nodes(renamed.graph, set(extra), applies)
    with converters_installed(extra, _opsets(model)), _object_inputs():
        return from_onnx(renamed, **kwargs)


def foreign_domain_nodes(model: onnx.ModelProto, handled: set[ConverterKey] | None = None) -> list[ConverterKey]:
    """(domain, op_type) of nodes outside the default domain that TVM would import by op_type alone."""
    handled = {(normalize_domain(d), op) for d, op in (handled or set())}
    seen: list[ConverterKey] = []

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            key = (normalize_domain(node.domain), node.op_type)
            if key[0] != DEFAULT_DOMAIN and key not in handled and key not in seen:
                seen.append(key)
            for sub in subgraphs(node):
                walk(sub)

    walk(model.graph)
    return seen
