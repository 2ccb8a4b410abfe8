"""The command-line interface: Typer only, one module per command group; the library never imports it."""

from harmonizer_deploy.cli.app import app, main

__all__ = ["app", "main"]
