#!/usr/bin/env python
"""Retrain the best architecture of a study: a thin wrapper over nas.cli.retrain_main."""

import sys

from nas.cli import retrain_main

if __name__ == "__main__":
    sys.exit(retrain_main())
