"""``python -m synth7t.cli <command> ...``: the ``synth7t`` command line."""

import sys

from . import main

sys.exit(main())
