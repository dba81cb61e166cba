"""The ``mouthpiece`` command line (also ``python -m engine`` and ``python server.py``):
:func:`build_parser` hangs every command group's subcommands (each module's ``add_commands``:
checkpoints, prepare and dub, serve, train, bench) under one parser, each with its ``func``;
:func:`main` parses ``argv`` and runs that ``func`` under the error convention of
:func:`engine.cli.errors.tool_main` (a user error, including a refused checkpoint, is one
``mouthpiece: error: ...`` line and status 2; Ctrl+C 130).
"""

from __future__ import annotations

import argparse

from engine.cli import checkpoints, dub, serve, train
from engine.cli.errors import USER_ERRORS, tool_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mouthpiece", description="Real-time lip-sync avatar engine (IP_LAP)."
    )
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
