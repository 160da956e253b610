"""The ``locate`` flags, shared by ``nodebisect locate`` and ``nodebisect tui``.

Its own module so that the ``tui`` command can reuse them without importing
``cli.main`` (which registers the ``tui`` command: a circle otherwise).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_locate_options(p: argparse.ArgumentParser) -> None:
    """Add the model positional and every locate option to ``p``."""
    p.add_argument("model", help="model.pt2 | TorchScript .pt | pickled .pt (with --trust-pickle) | file.py:factory | pkg.module:factory "
                   "| model.keras (with --inputs x.npz; a factory may return a Keras model: nodebisect[keras])")
    src = p.add_argument_group("inputs")
    src.add_argument("--inputs", action="append", metavar="FILE", help=".pt (tensor, tuple/list or dict of kwargs) or .npz; repeat it to compare on several input sets")
    src.add_argument("--input", action="append", dest="input_specs", metavar="NAME=1x3x224x224[:float32]", help="random input tensor (repeatable)")
    src.add_argument("--seed", type=int, default=0, help="seed for --input tensors and --trials (default 0)")
    src.add_argument("--trials", type=int, default=1, metavar="N",
                     help="also compare on N-1 drawn input sets reaching edge cases (negatives, ties, zeros, large, tiny); "
                          "culprits are grouped per trial")
    exp = p.add_argument_group("export and run")
    exp.add_argument("--onnx", metavar="FILE", help="debug this ONNX file (dynamo export of the same model) instead of exporting")
    exp.add_argument("--opset", type=int, help="ONNX opset for the export")
    exp.add_argument("--dynamic", action="store_true", help="export with dynamic dimensions (Dim.AUTO); --trials then also compare at other input shapes")
    exp.add_argument("--exporter", choices=["dynamo", "torchscript", "both"], default="dynamo",
                     help="ONNX exporter: dynamo (FX-node mapping, default) or torchscript (module-scope mapping through forward hooks); "
                          "both: locate with each and show the two verdicts side by side (which exporter to file against)")
    exp.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where PyTorch runs (default cpu)")
    exp.add_argument("--ep", choices=["cpu", "cuda"], default="cpu", help="onnxruntime execution provider (default cpu)")
    exp.add_argument("--opt-level", choices=["disabled", "basic", "extended", "all"], default="all", help="onnxruntime graph optimization level (default all)")
    exp.add_argument("--no-isolate-crashes", dest="isolate_crashes", action="store_false", help="run onnxruntime in-process (faster start; a crash in onnxruntime then kills nodebisect)")
    exp.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds one onnxruntime session may take before it counts as hung (default 600)")
    exp.add_argument("--memory-budget", type=float, metavar="MIB", help="MiB of reference activations kept in RAM; the rest is memory-mapped from disk (default: a quarter of available memory)")
    exp.add_argument("--trust-pickle", action="store_true", help="allow torch.load(weights_only=False) on MODEL: unpickling runs code from the file "
                     "(a .keras file: Keras' safe_mode=False, running the Lambda code it carries)")
    exp.add_argument("--tf2onnx-optimizers", metavar="NAMES", help="Keras models: the tf2onnx optimizers to convert with, comma-separated, "
                     "or 'baseline' ({remove_identity} only); default: tf2onnx's own set")
    cmp = p.add_argument_group("comparison and search")
    cmp.add_argument("--rtol", type=float, help="relative tolerance (default per dtype: fp32 1e-3, fp16 1e-2, bf16 5e-2; ints exact)")
    cmp.add_argument("--atol", type=float, help="absolute tolerance (default per dtype: fp32 1e-4, fp16 1e-3, bf16 1e-2; ints exact)")
    cmp.add_argument("--strategy", choices=["auto", "all", "bisect"], default="auto", help="all: one session marks every value; bisect: O(log N) sessions (default auto)")
    cmp.add_argument("--probes-per-step", type=int, default=3, metavar="K", help="values measured per onnxruntime session while bisecting (default 3)")
    cmp.add_argument("--no-capture-check", action="store_true", help="skip comparing eager PyTorch with the exported program")
    cmp.add_argument(
        "--oracle",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the program once more in float64 so each value is judged against PyTorch's own rounding noise "
        "(auto: when no --rtol/--atol is given and it fits the memory budget)",
    )
    mod = p.add_argument_group("model settings")
    mod.add_argument(
        "--model-setting", action="append", dest="model_settings", metavar="KEY=VALUE",
        help="set a config value or attribute of the model before export (repeatable), e.g. use_cache=False or "
        "attn_implementation=eager: the remedies an export failure names; every report notes it",
    )


def locate_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``locate()`` options from parsed flags (shared with the TUI command)."""
    inputs = args.inputs or []
    return {
        "onnx_path": args.onnx,
        "opset": args.opset,
        "rtol": args.rtol,
        "atol": args.atol,
        "device": args.device,
        "ep": args.ep,
        "strategy": args.strategy,
        "probes_per_step": args.probes_per_step,
        "opt_level": args.opt_level,
        "check_capture": not args.no_capture_check,
        "oracle": args.oracle,
        "seed": args.seed,
        "input_specs": args.input_specs,
        "inputs_file": inputs[0] if inputs else None,
        "extra_inputs": inputs[1:] or None,
        "trials": args.trials,
        "dynamic": args.dynamic,
        "trust_pickle": args.trust_pickle,
        "exporter": args.exporter,
        "isolate_crashes": args.isolate_crashes,
        "timeout_s": args.timeout,
        "memory_budget": int(args.memory_budget * 2**20) if args.memory_budget is not None else None,
        # Only when given: an older Options without the field still takes every other flag.
        **({"model_settings": list(args.model_settings)} if getattr(args, "model_settings", None) else {}),
        **({"tf2onnx_optimizers": args.tf2onnx_optimizers} if getattr(args, "tf2onnx_optimizers", None) else {}),
    }


def add_interop_options(group: Any) -> None:
    """``locate``'s files for other tools (cli.interop writes them from the live run)."""
    group.add_argument("--model-explorer", metavar="DIR",
                       help="write model.onnx, report.json and Model Explorer node-data overlays (error, local error, status per node) into DIR; open with `nodebisect explore DIR`")
    group.add_argument("--polygraphy", metavar="DIR",
                       help="write PyTorch's values of the compared ONNX tensors as Polygraphy golden outputs (+ inputs, model.onnx, README.txt with the `polygraphy run` command) into DIR")
