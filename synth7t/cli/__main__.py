"""``python -m synth7t.cli <command> ...``: the ``synth7t`` command line."""

import sys

from synth7t.cli import main

sys.exit(main())
