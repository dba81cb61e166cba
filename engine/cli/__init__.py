"""The ``mouthpiece`` command line (console script ``engine.cli:main``; also ``python -m engine`` and
``python server.py``). :mod:`~engine.cli.main` builds the parser and runs a command;
:mod:`~engine.cli.errors` holds the error convention (:func:`tool_main`); one module per command
group: :mod:`~engine.cli.checkpoints`, :mod:`~engine.cli.dub` (prepare, dub),
:mod:`~engine.cli.train`, :mod:`~engine.cli.serve` (serve, bench latency). This package is the only
engine code that imports :mod:`streaming`.
"""

from engine.cli.errors import tool_main
from engine.cli.main import build_parser, main

__all__ = ["build_parser", "main", "tool_main"]
