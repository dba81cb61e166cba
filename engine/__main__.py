"""``python -m engine``: the ``mouthpiece`` command line (:func:`engine.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
