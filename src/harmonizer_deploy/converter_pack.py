"""Converters TVM 0.27's Relax ONNX frontend lacks or gets wrong, installed through `tvm_hook` (no TVM edits)."""

from __future__ import annotations

from .tvm_hook import Converter, ConverterKey

CONVERTERS: dict[ConverterKey, Converter] = {}
