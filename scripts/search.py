#!/usr/bin/env python
"""`python scripts/search.py ARGS` is `nas search ARGS`: run or resume a budget-gated search."""

import sys

from nas.cli.main import search_main

if __name__ == "__main__":
    sys.exit(search_main())
