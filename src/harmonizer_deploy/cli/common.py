"""What every command shares: the consoles, error handling (one line + exit code), JSON output, option parsers.

The library never sees CLI strings: the parsers here turn them into typed values first.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from harmonizer_deploy.core.errors import EXIT_INTERNAL, HarmonizerError
from harmonizer_deploy.core.extras import missing_extra_error

# Wide enough for the report tables when output goes to a file or CI log.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
NoBuildOpt = Annotated[bool, typer.Option(
    "--no-build", help="Fail instead of converting/compiling a missing model.onnx or artifact (for scripts).")]
TolOpt = Annotated[list[str] | None, typer.Option(
    help="Tolerance override: a number for every tensor, or NAME=number for one (repeatable).")]


def cli_command(fn):
    """Turn library errors into one line + exit code; never a bare traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarmonizerError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            missing = missing_extra_error(exc) if isinstance(exc, ImportError) else None
            if missing is not None:  # a module of an extra that is not installed: say which extra
                err.print(f"[bold red]error:[/] {escape(missing.one_line())}", highlight=False, soft_wrap=True)
                raise typer.Exit(missing.exit_code) from None
            if os.environ.get("HARMONIZER_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first)} — rerun with "
                      "HARMONIZER_DEBUG=1 for the traceback and report it", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def say(message: str) -> None:
    """Progress a library call reports (e.g. building on first use): stderr, so stdout stays clean for --json."""
    err.print(escape(message), highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def parse_range(value: str | None) -> tuple[float, float] | None:
    """`--val-range LOW,HIGH` → (low, high)."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise HarmonizerError(f"--val-range {value!r} is not LOW,HIGH", "pass e.g. --val-range 0,1") from None
    return low, high


def parse_dims(items: list[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, _, size = item.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise HarmonizerError(f"--fix-dim {item!r} is not NAME=SIZE", "e.g. --fix-dim batch=1 --fix-dim time=32")
        dims[name] = int(size)
    return dims
