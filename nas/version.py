"""Owns the tool's version: `nas.__version__`, what `nas doctor` prints and what a study records
as `records.TOOL_VERSION`. The same as pyproject.toml's. Imports nothing, so `import nas` stays
free of torch and optuna and no module has to import `nas` itself for it."""

VERSION = "0.1.0"
