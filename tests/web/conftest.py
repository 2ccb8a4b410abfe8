"""Fixtures shared by the browser tests: the session's tiny model compiled for the web targets."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def web_wasm(built) -> Path:
    """The tiny session model compiled for wasm into the session build dir (next to its cpu artifact)."""
    from harmonizer_deploy import compile

    compile(built / "model.onnx", "wasm", built / "wasm")
    return built


@pytest.fixture(scope="session")
def web_build(web_wasm) -> Path:
    """The tiny model compiled for webgpu and wasm, next to its ONNX file."""
    from harmonizer_deploy import compile

    compile(web_wasm / "model.onnx", "webgpu", web_wasm / "webgpu")
    return web_wasm
