"""What every command shares: the consoles, error handling (one line + exit code), JSON output, option parsers.

The library never sees CLI strings: the parsers here turn them into typed values first.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from harmonizer_deploy.core.errors import EXIT_INTERNAL, HarmonizerError

# Wide enough for the report tables when output goes to a file or CI log.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
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
            if os.environ.get("HARMONIZER_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first)} — rerun with "
                      "HARMONIZER_DEBUG=1 for the traceback and report it", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def _non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def finite_json(data: Any) -> tuple[Any, Any]:
    """`data` with every NaN/±Infinity float replaced by null, and a flag saying what was there: a bare `NaN` is
    not JSON, and strict parsers (browsers, jq, `json.loads(parse_constant=…)`) reject the whole document.

    A dict gains `KEY_non_finite` next to each such KEY: "NaN"/"Infinity"/"-Infinity" for a number, or
    {index: that} for a list's elements. Returns (clean data, flag of `data` itself or None)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, _non_finite(data)
    if isinstance(data, dict):
        clean: dict[Any, Any] = {}
        for key, value in data.items():
            clean[key], flag = finite_json(value)
            if flag is not None:
                clean[f"{key}_non_finite"] = flag
        return clean, None
    if isinstance(data, list | tuple):
        items, flags = [], {}
        for i, value in enumerate(data):
            item, flag = finite_json(value)
            items.append(item)
            if flag is not None:
                flags[str(i)] = flag
        return items, flags or None
    return data, None


def emit_json(data: Any) -> None:
    """Strict JSON on stdout (see `finite_json`): never a bare NaN or Infinity."""
    sys.stdout.write(json.dumps(finite_json(data)[0], indent=2, allow_nan=False) + "\n")


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
