"""WHERE the ONNX graph first departs from PyTorch. Never imports torch."""
