"""The error convention of every ``mouthpiece`` command (:func:`tool_main`): a user error (a missing
file, a bad value, a refused checkpoint: one of the listed exception types) is one
``PROG: error: ...`` line on stderr and exit status 2, argparse's own convention for bad options;
Ctrl+C is one ``PROG: interrupted`` line and status 130; anything else is a bug and propagates with
its traceback.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["USER_ERRORS", "tool_main"]

USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, RuntimeError)


def tool_main(
    parser: argparse.ArgumentParser,
    run,
    argv: list[str] | None = None,
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """The ``main`` of a command line: parse ``argv``, call ``run(args)`` for the exit status, and turn
    one of ``errors`` into a single ``PROG: error: ...`` line on stderr and status 2 (argparse's own
    convention), Ctrl+C into 130."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except errors as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
