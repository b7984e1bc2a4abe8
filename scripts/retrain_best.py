#!/usr/bin/env python
"""`python scripts/retrain_best.py ARGS` is `nas retrain ARGS`: retrain a study's best model."""

import sys

from nas.cli.main import retrain_main

if __name__ == "__main__":
    sys.exit(retrain_main())
