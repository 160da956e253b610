"""Save every sample of samples/divergent.py as a torch.export program plus its inputs.

Usage: python samples/build.py [OUTDIR]     (default: samples/build/)

Writes, per sample NAME:
  NAME.pt2        torch.export.save(torch.export.export(model.eval(), inputs), path)
                  (the .pt2 keeps the example inputs: ep.example_inputs)
  NAME.inputs.pt  torch.save(inputs) - the tuple of input tensors
"""

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from divergent import SAMPLES  # noqa: E402


def build(outdir):
    os.makedirs(outdir, exist_ok=True)
    written = []
    for name, cls in SAMPLES.items():
        model = cls().eval()
        inputs = cls.example_inputs()
        ep = torch.export.export(model, inputs)
        pt2 = os.path.join(outdir, f"{name}.pt2")
        inp = os.path.join(outdir, f"{name}.inputs.pt")
        torch.export.save(ep, pt2)
        torch.save(inputs, inp)
        written += [pt2, inp]
        print(f"{name}: {pt2}, {inp}")
    return written


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "build"))
