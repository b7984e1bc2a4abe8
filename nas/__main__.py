"""`python -m nas ...` is the `nas` command (nas.cli.main)."""

import sys

from nas.cli.main import main

sys.exit(main())
