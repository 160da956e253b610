"""``--transform NAME``: the options and the handler, for ``nodebisect diff REFERENCE.onnx --transform NAME``.

``add_transform_options(parser)`` adds ``--transform`` and ``--transform-tolerance``;
``run_transform(args)`` runs ``nodebisect.transforms.api.transform`` and prints the
transformation's lines (``report.transform_wording``). Until the diff command wires
them in, ``nodebisect transform REFERENCE.onnx --transform NAME`` runs them on its own.
"""

from __future__ import annotations

import argparse
import sys

TRANSFORM_HELP = (
    "apply a known transformation to the reference and search its knobs for the smallest change that makes it match: "
    "fp16, quantize-dynamic, quantize-static (calibrated on the inputs), onnxscript (the exporter's optimizer), "
    "onnxoptimizer, ort-transformers:MODEL_TYPE (needs nodebisect[transforms])"
)


def add_transform_options(parser: argparse.ArgumentParser) -> None:
    """The transformation's own options (the diff command adds them with this one call)."""
    group = parser.add_argument_group("transformation")
    group.add_argument("--transform", metavar="NAME", help=TRANSFORM_HELP)
    group.add_argument(
        "--transform-tolerance", type=float, metavar="REL",
        help="largest worst-output error, relative to the output's scale, that still matches (default: the candidate precision's: float32 1e-4, float16 1e-2, int8 5e-2)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """``nodebisect transform REFERENCE.onnx --transform NAME`` (standalone, before the diff command exists)."""
    parser.add_argument("reference", metavar="REFERENCE.onnx", help="the ONNX model the transformation starts from")
    add_transform_options(parser)
    parser.add_argument("--inputs", metavar="FILE.npz", help="inputs by name (default: seeded values of the declared shapes)")
    parser.add_argument("--ep", default="cpu", help="execution provider both models run on (default cpu)")
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON ('-' for stdout)")
    parser.add_argument("--report", metavar="DIR", help="write report.json and transform/{candidate,fixed_candidate}.onnx into DIR")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=run_transform)


def run_transform(args: argparse.Namespace) -> int:
    """Run the transformation of ``args.reference`` (or the diff command's reference), print, write; the exit code."""
    from nodebisect.errors import BadInputError
    from nodebisect.report.atomic import write_text
    from nodebisect.report.transform_wording import transform_lines
    from nodebisect.transforms.api import transform

    if not getattr(args, "transform", None):
        raise BadInputError("--transform NAME is required (fp16, quantize-dynamic, quantize-static, onnxscript, onnxoptimizer, ort-transformers:MODEL_TYPE)")
    result = transform(args.reference, args.transform, getattr(args, "inputs", None), ep=getattr(args, "ep", "cpu"),
                       report=getattr(args, "report", None), tolerance=getattr(args, "transform_tolerance", None))
    text = result.to_json()
    json_path = getattr(args, "json", None)
    human = sys.stderr if json_path == "-" else sys.stdout
    if json_path == "-":
        print(text, end="")
    elif json_path:
        write_text(json_path, text)
        print(f"wrote {json_path}", file=sys.stderr)
    report = getattr(args, "report", None)
    if report:
        from pathlib import Path

        Path(report).mkdir(parents=True, exist_ok=True)
        write_text(Path(report) / "report.json", text)
        print(f"wrote report to {report}", file=sys.stderr)
    for line in transform_lines(result.transform):
        print(line, file=human)
    return int(result.exit_code)
