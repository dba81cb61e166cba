"""Run the mouthpiece live server: ``python server.py`` (same as ``mouthpiece serve``; --help)."""

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
