"""``python -m synth7t <command> ...`` (and ``torchrun ... -m synth7t train ...``): the ``synth7t`` command line."""

import sys

from .cli import main

sys.exit(main())
