"""``nodebisect tui MODEL|RESULT.json|SWEEP_DIR``: the terminal UI, registered by ``cli.main._extra_commands``.

Takes the same options as ``locate``; a ``.json`` positional opens a saved result
(``nodebisect.load_result``) and a sweep directory its table of models, both without
importing torch. The app lives in ``nodebisect_tui`` (the ``tui/`` folder) and is
imported only when the command runs, so ``nodebisect --help`` stays instant.
"""

from __future__ import annotations

import argparse

from nodebisect.cli.options import add_locate_options, locate_kwargs
from nodebisect.errors import BadInputError

MODEL_HELP = "RESULT.json (saved with `locate --json`, opens instantly), a sweep directory (DIR with sweep.jsonl), or a model as for `locate`: " \
             "model.pt2 | TorchScript .pt | pickled .pt (with --trust-pickle) | file.py:factory | pkg.module:factory"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``locate`` options (the positional may also be a result JSON)."""
    add_locate_options(parser)
    for action in parser._actions:  # noqa: SLF001 - reword the shared positional's help
        if action.dest == "model":
            action.help = MODEL_HELP
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    """Build the app through ``nodebisect_tui.create_app`` and run it until the user quits."""
    if args.inputs and len(args.inputs) > 1:
        raise BadInputError("several --inputs files are not supported yet", tip="pass one --inputs FILE")
    if getattr(args, "exporter", "") == "both":  # the TUI shows one result
        raise BadInputError("the TUI shows one exporter's result", tip="run nodebisect locate MODEL --exporter both, or pick --exporter dynamo or torchscript here")
    try:
        from nodebisect_tui import create_app
        from nodebisect_tui.sweep_screen import create_sweep_app, is_sweep_dir
    except ImportError as exc:
        raise BadInputError(f"the terminal UI is not installed ({exc})", tip="reinstall nodebisect: pip install -e .") from exc
    if is_sweep_dir(args.model):  # DIR/sweep.jsonl: the table of models; Enter opens one's result
        sweep = create_sweep_app(args.model)
        sweep.run()
        return int(sweep.return_code or 0)
    app = create_app(args.model, **locate_kwargs(args))
    app.run()
    return int(app.return_code or 0)
