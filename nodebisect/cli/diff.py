"""``nodebisect diff REFERENCE.onnx CANDIDATE.onnx``: the first node where a transformed ONNX model departs from its source.

Thin over ``nodebisect.diff``; the output flags and exit codes are ``locate``'s
(0 match, 1 divergence, 2 bad input: unrelated models, inputs that fit one model only; a divergence
only at positions a mask input excludes exits 0 unless ``--strict-masked``).
"""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Compare CANDIDATE (REFERENCE optimized, fused, converted to float16, quantized, or the same file on "
                     "another execution provider) with REFERENCE, and name the first node that departs beyond the candidate's precision.")
    p.add_argument("reference", help="the ONNX model the candidate was made from")
    p.add_argument("candidate", nargs="?", help="the transformed ONNX model (or the same file, with another --ep / --reference-ep); omitted with --transform NAME")
    src = p.add_argument_group("inputs")
    src.add_argument("--inputs", metavar="FILE", help=".npz keyed by the models' input names (default: random draws from the input types)")
    src.add_argument("--input", action="append", dest="input_specs", metavar="NAME=1x3x224x224[:float32]", help="random input tensor (repeatable)")
    src.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    src.add_argument("--trials", type=int, default=0, metavar="N", help="also compare on N-1 more input sets: the inputs at 10x, 0.1x, 100x (overflow and underflow)")
    run = p.add_argument_group("backends and comparison")
    run.add_argument("--ep", choices=["cpu", "cuda"], default="cpu", help="the candidate's onnxruntime execution provider (default cpu)")
    run.add_argument("--reference-ep", choices=["cpu", "cuda", "reference"], default="cpu",
                     help="the reference's backend: onnxruntime on cpu/cuda, or ONNX's reference evaluator (default cpu)")
    run.add_argument("--rtol", type=float, help="fixed relative tolerance (default: per dtype and the candidate's precision)")
    run.add_argument("--atol", type=float, help="fixed absolute tolerance")
    run.add_argument("--strategy", choices=["auto", "all", "bisect"], default="auto", help="all: one session marks every value; bisect: O(log N) sessions")
    run.add_argument("--memory-budget", type=float, metavar="MIB", help="MiB of reference values kept in RAM; the rest is memory-mapped from disk")
    run.add_argument("--no-isolate-crashes", dest="isolate_crashes", action="store_false",
                     help="run the candidate in onnxruntime in-process (about 0.1x of the floor faster on BERT-base int8; a crash "
                     "in onnxruntime then kills nodebisect)")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the LocateResult as JSON ('-' for stdout)")
    out.add_argument("--report", metavar="DIR", help="write report.md, report.json, graph.svg and repro/ into DIR")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    out.add_argument("--verbose", "-v", action="store_true", help="also print every onnxruntime session")
    out.add_argument("--strict-masked", action="store_true", help="exit 1 also for a divergence only at positions a mask input "
                     "excludes (default: exit 0, said in the verdict; --transform then judges every position too)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    __import__("nodebisect.cli.transform", fromlist=["add_transform_options"]).add_transform_options(p)
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from nodebisect import diff
    from nodebisect.cli.main import ProgressPrinter
    from nodebisect.report.atomic import write_text
    from nodebisect.report.scope_wording import exit_code
    from nodebisect.report.summary import summary

    if args.transform or not args.candidate:  # --transform NAME makes the candidate (nodebisect.cli.transform)
        return __import__("nodebisect.cli.transform", fromlist=["run_transform"]).run_transform(args, ProgressPrinter(quiet=args.quiet, verbose=args.verbose))
    human = sys.stderr if args.json == "-" else sys.stdout
    options = {k: getattr(args, k) for k in ("rtol", "atol", "memory_budget") if getattr(args, k) is not None}
    options["isolate_crashes"] = args.isolate_crashes
    result = diff(
        args.reference, args.candidate, args.inputs, ep=args.ep, reference_ep=args.reference_ep, trials=args.trials,
        log=ProgressPrinter(quiet=args.quiet, verbose=args.verbose), input_specs=args.input_specs, seed=args.seed,
        strategy=args.strategy, **options,
    )
    if args.json == "-":
        print(result.to_json(), end="")
    elif args.json:
        write_text(args.json, result.to_json())
        print(f"wrote {args.json}", file=sys.stderr)
    written = None
    if args.report:
        from nodebisect.report.bundle import write_report

        written = write_report(result, args.report)
        print(f"wrote report to {written}", file=sys.stderr)
    repro = written is not None and (written / "repro" / "repro.py").exists()
    print(summary(result, report_dir=args.report if written else None, verbose=args.verbose, repro=repro), file=human, flush=True)
    return exit_code(result, strict_masked=args.strict_masked)
