"""Owns the defaults of the commands that only read or write a finished run: export, predict
and doctor. No torch, no optuna: their parsers are built from these names.
"""

EXPORT_FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17  # ONNX opset: supported by onnxruntime >= 1.14 and every current runtime
OPSETS = (9, 20)  # the opsets torch's TorchScript-based ONNX exporter supports (inclusive)
EXPORT_TOLERANCE = 1e-4  # largest absolute logit difference an export may show
PREDICT_BATCH = 64  # images per forward pass when predicting a folder
DEFAULT_TOP = 3  # class names shown per image
DOCTOR_SECONDS = 5.0  # how long `nas doctor`'s training steps run (after one warm-up step)
