"""Exporting a fitted model to formats that run without funad's training stack (ONNX)."""
