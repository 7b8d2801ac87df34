"""The ``hific`` command line: a thin click shell over the library (see app.py)."""

from hificli.cli.app import cli, main

__all__ = ["cli", "main"]
