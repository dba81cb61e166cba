"""The ``mouthpiece`` command line (also ``python -m engine`` and ``python server.py``):
:func:`build_parser` hangs every command group's subcommands (each module's ``add_commands``:
checkpoints, prepare and dub, serve, train, bench) under one parser, each with its ``func``;
:func:`main` parses ``argv`` and runs that ``func`` under the error convention of
:func:`engine.cli.errors.tool_main` (a user error, including a refused checkpoint, is one
``mouthpiece: error: ...`` line and status 2; a stop signal 128 + its number, Ctrl+C 130).
``mouthpiece --version`` prints the installed package's version (:func:`version`).
"""

from __future__ import annotations

import argparse

from engine.cli import checkpoints, dub, serve, train
from engine.cli.errors import USER_ERRORS, OneLineParser, tool_main

__all__ = ["__version__", "build_parser", "main", "version"]

#: The version of this source tree (pyproject.toml's), for a checkout that is not installed.
__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version (``importlib.metadata``), else :data:`__version__`."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("mouthpiece")
    except PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mouthpiece", description="Real-time lip-sync avatar engine (IP_LAP).")
    parser.add_argument("--version", action="version", version=f"mouthpiece {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    checkpoints.add_commands(sub)
    dub.add_commands(sub)
    serve.add_serve_command(sub)
    train.add_commands(sub)
    serve.add_bench_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from models import CheckpointError

    return tool_main(build_parser(), lambda args: args.func(args), argv, (*USER_ERRORS, CheckpointError))
