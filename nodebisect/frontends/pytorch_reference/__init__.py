"""PyTorch as a ``Reference``: what the decomposed ExportedProgram knows of each value's op.

``frontends.capture.Activations`` holds the captured values and answers the
reference's questions through ``program.py`` (describe, op, parameter, the op alone
in float64, PyTorch's own decomposition, the weights): the diagnosis asks the
``Reference`` and never imports torch.
"""
