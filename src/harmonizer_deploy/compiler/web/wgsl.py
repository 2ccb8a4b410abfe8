"""What a set of WGSL kernels needs from the WebGPU device: features and limits above the spec defaults.

Written into the manifest at compile time so the page can request exactly these limits (and fail with a clear
message on a device that lacks them) instead of discovering it as a pipeline-creation error.
"""

from __future__ import annotations

import re
from typing import Any

# WebGPU spec defaults (https://www.w3.org/TR/webgpu/#limit-default): what every adapter grants without asking.
DEFAULT_LIMITS = {
    "maxStorageBuffersPerShaderStage": 8,
    "maxUniformBuffersPerShaderStage": 12,
    "maxComputeWorkgroupStorageSize": 16384,
    "maxComputeInvocationsPerWorkgroup": 256,
    "maxComputeWorkgroupSizeX": 256,
    "maxComputeWorkgroupSizeY": 256,
    "maxComputeWorkgroupSizeZ": 64,
}
SCALAR_BYTES = {"f32": 4, "i32": 4, "u32": 4, "f16": 2, "bool": 4}
_WORKGROUP_VAR = re.compile(r"var<workgroup>\s+[\w]+\s*:\s*array<\s*(\w+)\s*,\s*(\d+)\s*>")
_WORKGROUP_SIZE = re.compile(r"@workgroup_size\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?(?:,\s*(\d+)\s*)?\)")
_STORAGE = re.compile(r"var<storage\b")
_UNIFORM = re.compile(r"var<uniform>")


def split_kernels(source: str) -> list[str]:
    """One chunk per `@compute` entry point (module-scope declarations stay with the entry point after them)."""
    chunks, current = [], []
    for line in source.splitlines():
        current.append(line)
        if line.startswith("}") and any("@compute" in c for c in current):
            chunks.append("\n".join(current))
            current = []
    if any("@compute" in c for c in current):
        chunks.append("\n".join(current))
    return chunks


def requirements(source: str) -> dict[str, Any]:
    """Features and the per-kernel maxima of the limits the kernels use."""
    needed = {k: 0 for k in DEFAULT_LIMITS}
    kernels = split_kernels(source)
    for kernel in kernels:
        needed["maxStorageBuffersPerShaderStage"] = max(needed["maxStorageBuffersPerShaderStage"],
                                                        len(_STORAGE.findall(kernel)))
        needed["maxUniformBuffersPerShaderStage"] = max(needed["maxUniformBuffersPerShaderStage"],
                                                        len(_UNIFORM.findall(kernel)))
        shared = sum(SCALAR_BYTES.get(t, 4) * int(n) for t, n in _WORKGROUP_VAR.findall(kernel))
        needed["maxComputeWorkgroupStorageSize"] = max(needed["maxComputeWorkgroupStorageSize"], shared)
        for m in _WORKGROUP_SIZE.finditer(kernel):
            x, y, z = (int(v) if v else 1 for v in m.groups())
            needed["maxComputeInvocationsPerWorkgroup"] = max(needed["maxComputeInvocationsPerWorkgroup"], x * y * z)
            needed["maxComputeWorkgroupSizeX"] = max(needed["maxComputeWorkgroupSizeX"], x)
            needed["maxComputeWorkgroupSizeY"] = max(needed["maxComputeWorkgroupSizeY"], y)
            needed["maxComputeWorkgroupSizeZ"] = max(needed["maxComputeWorkgroupSizeZ"], z)
    features = ["shader-f16"] if re.search(r"^\s*enable\s+f16\s*;", source, re.M) else []
    return {
        "features": features,
        "limits": needed,
        "limits_above_default": {k: v for k, v in needed.items() if v > DEFAULT_LIMITS[k]},
        "num_kernels": len(kernels),
    }
