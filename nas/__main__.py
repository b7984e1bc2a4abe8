"""`python -m nas ...`: the package's command line (see nas.cli)."""

import sys

from nas.cli import main

sys.exit(main())
