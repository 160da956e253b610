"""Meeting users in the tools they already use: files other tools read, from a live run.

``polygraphy``: PyTorch's values as Polygraphy golden outputs; ``live``: what a run keeps for
the writers (its ``Prepared``) and the ONNX model Model Explorer opens; ``observer``:
``torch.onnx.InputObserver`` captures as input sets. The overlays themselves are pure and
live in ``report.model_explorer`` (every ``--report`` bundle has them).
"""
