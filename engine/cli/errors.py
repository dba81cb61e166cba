"""The error convention of every ``mouthpiece`` command (:func:`tool_main`).

Exit status:

- 0: done;
- 1: the command ran and reports a failure (``checkpoints verify`` found an unusable file, ``bench
  latency`` could not measure every session), or the system failed it (disk full, an I/O error): one
  ``PROG: error: ...`` line;
- 2: a user error, before or during the run (a missing or unreadable file, a bad option value, a refused
  checkpoint, too-short audio, a busy port: one of the listed exception types, or argparse's own
  option errors), one ``PROG: error: ...`` line on stderr and no traceback;
- 128 + N: stopped by signal N (130 Ctrl+C / SIGINT, 143 SIGTERM, 129 SIGHUP), one ``PROG: interrupted
  by SIGNAME`` line; whatever the command was writing is removed (``dub`` leaves no ``.partial.mp4``).

Anything else is a bug and propagates with its traceback. SIGTERM and SIGHUP are turned into the same
exception as Ctrl+C (:class:`Interrupted`, a ``KeyboardInterrupt``), so every ``finally`` and ``except
BaseException`` clean-up runs; further signals during that clean-up are ignored (it is short: the
encoder drains at most a few frames), so a second Ctrl+C cannot leave a half-written file behind.
Warnings of the ``mouthpiece`` loggers (a truncated video, NaN audio samples) are ``PROG: warning: ...``
lines (:func:`warning_lines`); the command goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading

__all__ = ["USER_ERRORS", "Interrupted", "OneLineParser", "tool_main", "warning_lines"]

USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    ValueError,
    RuntimeError,
)

#: The signals that stop a command cleanly (those this platform has).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP while a command runs; ``outcome`` (set by the command on its way
    out, e.g. ``"nothing written"``) ends the one line :func:`tool_main` prints."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum
        self.outcome: str | None = None


class OneLineParser(argparse.ArgumentParser):
    """argparse with its option errors as one line (``PROG: error: MESSAGE (see PROG --help)``, status
    2) instead of the whole usage text before it. Subcommand parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


@contextlib.contextmanager
def _stop_signals():
    """SIGTERM and SIGHUP (and SIGINT) raise :class:`Interrupted` in the main thread while the block
    runs; after the first one the others are ignored, so that the clean-up it starts finishes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != pid:  # a forked worker (a pool, a DataLoader): what it did before
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        if previous[s] is not signal.SIG_IGN:  # nohup and friends stay in charge
            signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class _WarningLine(logging.Handler):
    """A ``mouthpiece.*`` warning as one ``PROG: warning: ...`` line on stderr."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.WARNING)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:  # the command configured logging (serve): its log has it
            return
        try:
            print(f"{self.prog}: warning: {record.getMessage()}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


@contextlib.contextmanager
def warning_lines(prog: str, logger: str = "mouthpiece"):
    """While the block runs, warnings of ``logger`` (and its children: ``mouthpiece.media``, ...) are
    printed as ``PROG: warning: ...`` lines, unless logging was configured (the server's log)."""
    log = logging.getLogger(logger)
    if logging.getLogger().handlers or log.handlers:
        yield
        return
    handler = _WarningLine(prog)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def tool_main(
    parser: argparse.ArgumentParser,
    run,
    argv: list[str] | None = None,
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """The ``main`` of a command line: parse ``argv``, call ``run(args)`` for the exit status, and turn
    one of ``errors`` into a single ``PROG: error: ...`` line on stderr and status 2 (argparse's own
    convention), a stop signal (Ctrl+C, SIGTERM, SIGHUP) into one line and status 128 + its number."""
    args = parser.parse_args(argv)
    try:
        with _stop_signals(), warning_lines(parser.prog):
            return run(args)
    except errors as e:
        print(f"{parser.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine refused (disk full, I/O error): a runtime failure, not a bug
        print(f"{parser.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", None)  # None: a KeyboardInterrupt raised by Python's own handler
        outcome = getattr(e, "outcome", None)
        by = f" by {signal.Signals(signum).name}" if signum is not None else ""
        print(f"{parser.prog}: interrupted{by}" + (f"; {outcome}" if outcome else ""), file=sys.stderr)
        return 128 + int(signal.SIGINT if signum is None else signum)


def _one_line(e: BaseException) -> str:
    """An error's message on one line: its own lines joined (an OS error as ``PATH: reason``)."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror[0].lower()}{e.strerror[1:]}"
    else:
        text = str(e) or e.__class__.__name__
    return "; ".join(re.sub(r"^\s*(- )?", "", line).rstrip() for line in text.splitlines() if line.strip())
