"""``nodebisect diff REFERENCE.onnx --transform NAME`` (and ``locate MODEL --transform NAME``): options and handlers.

``add_transform_options(parser)`` adds ``--transform``, ``--transform-tolerance`` and ``--transform-budget`` to the
diff command; ``run_transform(args)`` runs ``nodebisect.transforms.api.transform`` with the
diff command's inputs, backends and output flags, prints diff's summary and then the
transformation's lines (``report.transform_wording``), and returns the exit code.
``locate_with_transform`` is locate's: export and locate, then the same search on the
exported model (the sweep's ``--transform`` runs it in every model's child).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

TRANSFORM_HELP = (
    "apply a known transformation (diff: to REFERENCE, making the candidate; locate: to the exported ONNX model) and "
    "search its knobs for the smallest change that makes it match: fp16 (onnxconverter-common), fp16-ort (onnxruntime's "
    "transformers float16 converter), quantize-dynamic, quantize-static (calibrated "
    "on the inputs), onnxscript (the exporter's optimizer), onnxoptimizer, ort-transformers:MODEL_TYPE (needs nodebisect[transforms]); "
    "locate keeps its verdict when the tool refuses the export (exit 2) or writes a model onnxruntime cannot run (exit 4)"
)


def add_transform_options(parser: argparse.ArgumentParser) -> None:
    """The transformation's own options (the diff command adds them with this one call)."""
    group = parser.add_argument_group("transformation")
    group.add_argument("--transform", metavar="NAME", help=TRANSFORM_HELP)
    group.add_argument(
        "--transform-tolerance", type=float, metavar="REL",
        help="largest final-output error, relative to the output's scale, the knob search still calls a match "
        "(default: the candidate precision's: float32 1e-4, float16 1e-2, int8 5e-2); given, the candidate matches only "
        "when its outputs stay within it as well as diff's verdict, node by node, being a match",
    )
    group.add_argument(
        "--transform-budget", type=float, metavar="SECONDS",
        help="seconds the keep-list search may spend making a fix it found smaller (default 240); past it the fix found "
        "is reported, re-checked, and said not to be the smallest",
    )


def run_transform(args: argparse.Namespace, progress: Any = None) -> int:
    """``nodebisect diff REFERENCE --transform NAME``: the transformation, its diff and its fix; the exit code.

    ``progress``: the diff command's progress printer (cli.main.ProgressPrinter).
    """
    from nodebisect.errors import BadInputError
    from nodebisect.report.atomic import write_text
    from nodebisect.report.scope_wording import exit_code
    from nodebisect.report.summary import summary
    from nodebisect.report.transform_wording import transform_lines
    from nodebisect.transforms.api import transform

    if not getattr(args, "transform", None):
        raise BadInputError("give CANDIDATE.onnx, or --transform NAME to make it (fp16, quantize-dynamic, quantize-static, onnxscript, onnxoptimizer, ort-transformers:MODEL_TYPE)")
    if getattr(args, "candidate", None):
        raise BadInputError(f"give either CANDIDATE or --transform {args.transform}, not both (--transform makes the candidate)")
    options = {k: getattr(args, k) for k in ("rtol", "atol", "memory_budget", "strategy", "isolate_crashes") if getattr(args, k, None) is not None}
    result = transform(
        args.reference, args.transform, getattr(args, "inputs", None), ep=getattr(args, "ep", "cpu"),
        reference_ep=getattr(args, "reference_ep", "cpu"), report=getattr(args, "report", None),
        tolerance=getattr(args, "transform_tolerance", None), input_specs=getattr(args, "input_specs", None),
        seed=getattr(args, "seed", 0), log=progress, strict_masked=getattr(args, "strict_masked", False),
        **_budget(args), **options,
    )
    json_path = getattr(args, "json", None)
    human = sys.stderr if json_path == "-" else sys.stdout
    if json_path == "-":
        print(result.to_json(), end="")
    elif json_path:
        write_text(json_path, result.to_json())
        print(f"wrote {json_path}", file=sys.stderr)
    report = getattr(args, "report", None)
    if report:
        print(f"wrote report to {report}", file=sys.stderr)
    if result.first_divergent is not None or result.outputs:
        print(summary(result, report_dir=report, verbose=getattr(args, "verbose", False)), file=human)
    for line in transform_lines(result.transform):
        print(line, file=human, flush=True)
    return exit_code(result, strict_masked=getattr(args, "strict_masked", False))


def locate_with_transform(args: argparse.Namespace, progress: Any) -> Any:
    """``nodebisect locate MODEL --transform NAME``: locate, then the transformation of the exported ONNX model."""
    from nodebisect.cli.options import locate_kwargs
    from nodebisect.transforms.api import locate_and_transform

    return locate_and_transform(args.model, args.transform, report=getattr(args, "report", None),
                                tolerance=getattr(args, "transform_tolerance", None), progress=progress,
                                strict_masked=getattr(args, "strict_masked", False), **_budget(args), **locate_kwargs(args))


def _budget(args: argparse.Namespace) -> dict[str, float]:
    budget = getattr(args, "transform_budget", None)
    if budget is None:
        return {}
    if budget <= 0:
        from nodebisect.errors import BadInputError

        raise BadInputError(f"--transform-budget must be a positive number of seconds, not {budget:g}")
    return {"budget_s": budget}


def transform_text(result: Any) -> str:
    """The transformation's lines after locate's summary ("" without --transform)."""
    from nodebisect.report.transform_wording import transform_lines

    return "\n".join(transform_lines(result.transform))
