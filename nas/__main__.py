"""`python -m nas ...` is the `nas` command (nas.cli)."""

import sys

from nas.cli import main

sys.exit(main())
