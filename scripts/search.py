#!/usr/bin/env python
"""Search ResNet architectures under a parameter budget: a thin wrapper over nas.cli.search_main."""

import sys

from nas.cli import search_main

if __name__ == "__main__":
    sys.exit(search_main())
