"""Custom layers and ops: a registry of strategies (rewrite, custom-domain op, decomposition) that carry them
from TensorFlow through ONNX and onnxruntime to TVM. See docs/custom-ops.md."""

from __future__ import annotations

from harmonizer_deploy.custom_ops.registry import (
           CUSTOM_DOMAINS,
           DECOMPOSED_DOMAIN,
           DOMAIN,
           STRATEGIES,
           CustomOp,
           CustomOpRegistry,
           default_registry,
)

__all__ = ["CUSTOM_DOMAINS", "DECOMPOSED_DOMAIN", "DOMAIN", "STRATEGIES", "CustomOp", "CustomOpRegistry",
           "default_registry"]
