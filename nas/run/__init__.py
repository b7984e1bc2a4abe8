"""A finished model: `retrain` (the retrain run and its record on the study), `folder` (the
run folder: its file names, typed metrics and verified reads), `inference` (loading a run and
predicting), `export` and `export_check` (ONNX/TorchScript exports, verified against the run)
and `model_card` (`MODEL.md`).

Imports: every package below the command line except `nas.cli`; inference and export import no
optuna.
"""
