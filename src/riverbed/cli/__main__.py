"""``python -m riverbed.cli``: the same as the ``riverbed`` command."""

import sys

from riverbed.cli import main

sys.exit(main())
