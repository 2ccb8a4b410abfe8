"""The `harmonizer-deploy` command: the root Typer app, assembled from one module per command group.

Every command prints one clear line and exits non-zero on bad input; tracebacks only with HARMONIZER_DEBUG=1.
"""

from __future__ import annotations

import os
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer

from harmonizer_deploy.cli.build import build_app
from harmonizer_deploy.cli.check import check_app
from harmonizer_deploy.cli.common import out
from harmonizer_deploy.cli.coverage import coverage_app
from harmonizer_deploy.cli.debug import debug_app
from harmonizer_deploy.cli.model import model_app
from harmonizer_deploy.cli.music import music_app
from harmonizer_deploy.cli.remote import remote_app
from harmonizer_deploy.core.version import __version__

app = typer.Typer(
    name="harmonizer-deploy",
    help="Coconet harmonizer: TensorFlow → ONNX → TVM/MLC (cpu, cuda, vulkan, webgpu), verified against "
    "onnxruntime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Wide enough for the report tables when output goes to a file or CI log.


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"harmonizer-deploy {__version__}")
        raise typer.Exit()


for group in (model_app, build_app, check_app, music_app, coverage_app, remote_app):
    app.add_typer(group)
app.add_typer(debug_app, name="debug")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
