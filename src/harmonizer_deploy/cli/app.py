"""The `harmonizer-deploy` command: the root Typer app, assembled from one module per command group.

Every command prints one clear line and exits non-zero on bad input (usage errors too, see `main`); tracebacks
only with HARMONIZER_DEBUG=1. `-v`/`-q` set the level of the library's `harmonizer_deploy` logger.
"""

from __future__ import annotations

import os
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer

from harmonizer_deploy.cli.build import build_app
from harmonizer_deploy.cli.check import check_app
from harmonizer_deploy.cli.common import HELP, configure_logging, err, out
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
    context_settings=HELP,
)

# what --version reports besides the tool: distribution names, first one installed wins
VERSIONED = {"TVM": ("apache-tvm", "mlc-ai-nightly-cpu", "mlc-ai-nightly-cu128", "mlc-ai-cpu", "mlc-ai"),
             "tvm-ffi": ("apache-tvm-ffi",), "onnx": ("onnx",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
             "TensorFlow": ("tensorflow-cpu", "tensorflow")}


def versions_line() -> str:
    """`harmonizer-deploy X; TVM Y (apache-tvm); …` from package metadata, without importing TVM or TensorFlow."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"harmonizer-deploy {__version__}"]
    for label, dists in VERSIONED.items():
        for dist in dists:
            try:
                found = version(dist)
            except PackageNotFoundError:
                continue
            parts.append(f"{label} {found}" + (f" ({dist})" if label == "TVM" and dist != "apache-tvm" else ""))
            break
        else:
            if label != "TensorFlow":  # TensorFlow is optional (the [convert] extra): absent means not listed
                parts.append(f"{label} not installed")
    return "; ".join(parts)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version (and TVM, tvm-ffi, onnx, onnxruntime "
                                          "and TensorFlow's) and exit.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More detail on stderr, TensorFlow's start-up "
                                          "lines included.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors on stderr.")] = False,
) -> None:
    if version:
        out.print(versions_line(), highlight=False)
        raise typer.Exit()
    configure_logging(verbose, quiet)


for group in (model_app, build_app, check_app, music_app, coverage_app, remote_app):
    app.add_typer(group)
app.add_typer(debug_app, name="debug")


def main() -> None:
    """The console script: like `app()`, but a usage error (bad option, bad choice) is one line too."""
    import sys

    from rich.markup import escape

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # Typer's (vendored Click's) usage errors: bad option, bad choice
        ctx = getattr(exc, "ctx", None)
        where = f" — see `{ctx.command_path} -h`" if ctx is not None else ""
        err.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(where)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
