"""How each kind of artifact is run on a batch of inputs: the manifest's `runner` names one of these."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.registry import Registry

ArtifactRunner = Callable[[Path, dict, list[np.ndarray]], list[np.ndarray]]
RUNNERS: Registry[ArtifactRunner] = Registry("runner")
# Models of any signature: each input set {input name: array} → every output, in the manifest's output order.
FeedsRunner = Callable[[Path, dict, list[dict[str, np.ndarray]]], list[list[np.ndarray]]]
FEEDS_RUNNERS: Registry[FeedsRunner] = Registry("runner")


@RUNNERS.register("local")
def run_local(artifact_dir: Path, manifest: dict, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """TVM's runtime in this process (cpu, cuda, vulkan artifacts)."""
    from harmonizer_deploy.run.tvm import CompiledModel

    model = CompiledModel(artifact_dir)
    return [model.run(x) for x in inputs]


@RUNNERS.register("browser")
def run_browser(artifact_dir: Path, manifest: dict, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Headless Chromium (webgpu, wasm artifacts)."""
    from harmonizer_deploy.run.browser import run_in_browser

    return run_in_browser(artifact_dir, inputs)


@FEEDS_RUNNERS.register("local")
def run_local_feeds(artifact_dir: Path, manifest: dict, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """TVM's runtime in this process, any signature."""
    from harmonizer_deploy.run.tvm import CompiledModel

    model = CompiledModel(artifact_dir)
    return [model.run_feeds(f) for f in feeds]


@FEEDS_RUNNERS.register("browser")
def run_browser_feeds(artifact_dir: Path, manifest: dict, feeds: list[dict[str, np.ndarray]]
                      ) -> list[list[np.ndarray]]:
    """Headless Chromium, any signature: every input fed by name, every output back."""
    from harmonizer_deploy.run.browser import run_feeds_in_browser

    return run_feeds_in_browser(artifact_dir, manifest, feeds)
