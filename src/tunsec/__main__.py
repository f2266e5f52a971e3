"""``python -m tunsec``: the ``tunsec`` command (tunsec.cli)."""

import sys

from tunsec.cli import program

sys.exit(program())
