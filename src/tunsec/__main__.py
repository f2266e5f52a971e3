import sys

from tunsec.cli import main

sys.exit(main())
