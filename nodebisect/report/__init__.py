"""LocateResult -> text and files. Never imports torch or onnxruntime."""
