"""The TorchScript exporter path: module and function reference values for its ONNX graph."""
