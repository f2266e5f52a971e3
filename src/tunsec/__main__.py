"""``python -m tunsec``: the ``tunsec`` command (tunsec.cli)."""

import sys

from tunsec.cli import main

sys.exit(main())
