"""What makes report.md ready to file: a symptom title, the values behind the bug,
where to file it and the ``gh issue create`` command (pure text).

The maintainer who receives the issue reads the title first: it states the
symptom (what onnxruntime gives where PyTorch gives what), not nodebisect's
verdict. ``gh`` cannot upload pictures, so the command comes with how to
attach ``graph.svg`` / ``growth.svg`` by hand.
"""

from __future__ import annotations

from typing import Any

from nodebisect.records import (
    CAUSE_INHERITED,
    DIVERGED,
    EXPORT_FAILED,
    MATCH,
    RUNTIME_FAILED,
    STAGE_CAPTURE,
    STAGE_DECOMPOSITION,
    STAGE_GRAPH_OPTIMIZATION,
    WRONG,
    FirstDivergent,
    LocateResult,
    NodeRecord,
)
from nodebisect.report import tf2onnx_wording
from nodebisect.report.wording import (
    REPO_OPTIMIZER,
    REPO_RUNTIME,
    export_failure_file_at,
    export_failure_title,
    file_at,
    nonfinite_sentence,
)
from nodebisect.report import diff_wording as diff_words
from nodebisect.report.diff_wording import is_diff
from nodebisect.report.scope_wording import MASKED_ONLY, masked_only, torch_repro_sentence
from nodebisect.report.markup import fence, num, pair_text, value_text
from nodebisect.report.verdict import values_behind, verdict_view

TITLE_CHARS = 150


def issue_title(result: LocateResult) -> str:
    """A one-line symptom, as the GitHub issue title (no Markdown)."""
    fd = result.first_divergent
    if result.verdict == MATCH:
        return "nodebisect: the ONNX export matches PyTorch"
    if result.verdict == EXPORT_FAILED and result.export_failure is not None:
        text = export_failure_title(result.export_failure)
        return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"
    if fd is None or result.verdict not in (DIVERGED, RUNTIME_FAILED):
        return f"nodebisect: {result.verdict}"
    if is_diff(fd):
        return diff_words.issue_title(fd, _symptom(fd))
    exporter = result.environment.get("exporter", "dynamo")
    op = _framework_op(fd)
    where = file_at(fd, exporter)
    # Masked positions only: no numbers, which differ by dtype and mask kind for one missing guard (#22.3).
    symptom = f" {MASKED_ONLY}" if masked_only(result) else _symptom(fd)
    if tf2onnx_wording.is_tensorflow(fd, exporter) and tf2onnx_wording.issue_title(fd, op, symptom):
        text = tf2onnx_wording.issue_title(fd, op, symptom)
    elif fd.stage == STAGE_CAPTURE:
        text = f"torch.export: the exported program differs from eager PyTorch at {op}{symptom}"
    elif fd.stage == STAGE_DECOMPOSITION:
        text = f"torch.export decomposition changes the result of {op}{symptom}"
    elif where == REPO_OPTIMIZER:
        seg = "+".join(dict.fromkeys(fd.segment_op_types or [fd.op_type]))
        text = f"onnxscript optimizer: rewriting {op} into {seg} changes its result{symptom}"
    elif where == REPO_RUNTIME:
        alone = " together with its producers" if fd.checks.with_producers == WRONG else ""
        opt = f" with graph optimizations ({fd.optimizer.get('level') or 'on'})" if fd.cause == "optimizer" else ""
        text = f"onnxruntime: {fd.op_type} (from {op}){alone}{opt} differs from ONNX's reference and PyTorch{symptom}"
    elif fd.cause == CAUSE_INHERITED:
        text = f"numeric drift grows at {fd.op_type} (from {op}){symptom}"
    elif len(fd.segment) > 1 and fd.segment[0] != fd.onnx_node and fd.segment_op_types:
        # Inside a multi-node lowering the node that departs is the lead suspect, not the carrier's op.
        text = f"torch.onnx: {op} exported as several nodes; its {fd.segment_op_types[0]} computes something else{symptom}"
    else:
        text = f"torch.onnx: {op} exported as {fd.op_type} computes something else{symptom}"
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


# How report.md words each of the verdict view's values behind it (the order is the view's).
_VALUE_BULLETS = {
    "worst": "worst element {}",
    "nan/inf": "{}",
    "constants": "small constants of the culprit and its segment: `{}`",
    "isolated": "{}",
    "precision": "precision: {}",
    "amplified": "amplified downstream by {}",
    "suspect": "most suspect: {}",
    "mechanism": "mechanism: {}",
}


def values_section(result: LocateResult) -> str:
    """The worst element, the culprit's input values there, its constants and attributes."""
    fd = result.first_divergent
    if fd is None:
        return ""
    lines = [f"- {_VALUE_BULLETS[fact.label].format(fact.text)}" for fact in values_behind(fd)]  # also for a match that names a node
    node = result.node(fd.onnx_node)
    if node is not None and node.attributes:
        lines.append(f"- attributes of node `{fd.onnx_node}` ({fd.op_type}): `{full_attributes(node)}`")
    if not lines:
        return ""
    return "### The values behind it\n\n" + "\n".join(lines)


def what_to_do_section(result: LocateResult) -> str:
    """Where to file it and what to do meanwhile (one line each)."""
    fd = result.first_divergent
    if result.verdict == EXPORT_FAILED and result.export_failure is not None:
        repo, component = export_failure_file_at(result.export_failure)
        return f"### What to do\n\n- **File at:** [`{repo}`](https://github.com/{repo}/issues) — {component}"
    if fd is None or result.verdict not in (DIVERGED, RUNTIME_FAILED):
        return ""
    view = verdict_view(result)
    lines = []
    if view.file_at:
        lines.append(f"- **File at:** [`{view.file_at[0]}`](https://github.com/{view.file_at[0]}/issues) — {view.file_at[1]}")
    lines.append(f"- **Meanwhile:** {view.meanwhile.removeprefix('meanwhile, ')}")
    if fd.stage == STAGE_GRAPH_OPTIMIZATION:
        lines.append("- The repro holds the optimized subgraph; the unoptimized export (`optimize=False`) is right at this value.")
    return "### What to do\n\n" + "\n".join(lines)


def gh_command(result: LocateResult, has_svgs: list[str]) -> str:
    """The section with a ready ``gh issue create`` command and how to attach pictures."""
    fd = result.first_divergent
    if result.verdict == EXPORT_FAILED and result.export_failure is not None:
        where: tuple[str, str] | None = export_failure_file_at(result.export_failure)
    elif fd is None or result.verdict not in (DIVERGED, RUNTIME_FAILED):
        return ""
    else:
        where = file_at(fd, result.environment.get("exporter", "dynamo"))
    if where is None:
        return ""
    title = issue_title(result).replace("'", "'\\''")
    cmd = f"gh issue create --repo {where[0]} --title '{title}' --body-file report.md"
    text = "### Filing this report\n\nFrom this folder, with the [GitHub CLI](https://cli.github.com/):\n\n```sh\n" + cmd + "\n```"
    if has_svgs:
        names = " and ".join(f"`{n}`" for n in has_svgs)
        text += (
            f"\n\n`gh` cannot upload pictures, and the relative image links above break once pasted: open the new issue "
            f"in the browser, edit it, and drag {names} into the text (GitHub replaces each link with the uploaded file)."
        )
    return text


def reproduce_section(result: LocateResult, bundle: Any) -> str:
    """How to reproduce: the command with the model, and the repro bundle without it."""
    env = result.environment
    cmd = ["nodebisect", "locate", _shell_word(result.model or "MODEL")]
    if env.get("opset"):
        cmd += ["--opset", str(env["opset"])]
    for flag, key, default in (
        ("--exporter", "exporter", "dynamo"),
        ("--device", "device", "cpu"),
        ("--ep", "ep", "cpu"),
        ("--opt-level", "opt_level", "all"),
    ):
        if env.get(key) and env[key] != default:
            cmd += [flag, str(env[key])]
    for setting in env.get("applied_settings", []):  # without them the model would not even export
        cmd += ["--model-setting", _shell_word(setting)]
    cmd += _input_flags(env.get("run_inputs", {}))
    for dtype, tol in sorted(result.tolerance.items())[:1]:
        if (tol.get("rtol"), tol.get("atol")) not in ((1e-3, 1e-4), (None, None)) and dtype == "float32":
            cmd += ["--rtol", f"{tol['rtol']:g}", "--atol", f"{tol['atol']:g}"]
    cmd += ["--report", "report/"]
    if env.get("command") == "diff":  # nodebisect diff REFERENCE CANDIDATE, its backends and inputs
        cmd = [*map(_shell_word, diff_words.reproduce_command(env)), "--report", "report/"]
    recorded = "run_inputs" in env  # a run given tensors through the API has nothing to repeat
    text = "### How to reproduce\n\nWith the model" + (
        "" if recorded else " (on its example inputs; tensors given from Python need "
        + ("an `.npz` and `--inputs`)" if env.get("exporter") == "tf2onnx" else "`torch.save` and `--inputs`)")
    ) + ":\n\n"
    text += fence(" ".join(cmd), "sh")
    if bundle.repro_dir and "repro.py" in bundle.repro_files:  # the ONNX repro (not a capture or export script)
        files = ", ".join(f"`{f}`" for f in bundle.repro_files)
        text += (
            f"\n\nWithout the model: `{bundle.repro_dir}/` ({_size(bundle.repro_bytes)}) holds the culprit's local "
            f"ONNX subgraph fed with {tf2onnx_wording.reference_name(env)}'s own values ({files}). It needs only numpy and onnxruntime; "
            "it exits 1 while the mismatch reproduces and 0 once fixed"
            + (f". It holds {bundle.repro_window.replace('PyTorch', tf2onnx_wording.reference_name(env))}" if bundle.repro_window else "")
            + ":\n\n"
        )
        text += fence(f"pip install numpy onnxruntime=={env.get('onnxruntime', '')}".rstrip("=") + f"\npython {bundle.repro_dir}/repro.py", "sh")
        text += (
            f"\n\n`{bundle.repro_dir}/test_data_set_0/` follows the ONNX backend-test layout "
            "(`input_N.pb`, `output_0.pb`) for runtimes other than onnxruntime."
        )
        if "torch_repro.py" in bundle.repro_files:
            text += "\n\n" + torch_repro_sentence(bundle.repro_dir)
        if "unoptimized/" in bundle.repro_files:
            text += (
                f"\n\n`{bundle.repro_dir}/unoptimized/` holds the same value's ops as the exporter translated them, "
                "before its graph optimizer folded them (e.g. Conv + BatchNormalization): repro.py runs both, so the "
                "optimizer's maintainers see the folded node wrong and the unfused pair right."
            )
    elif bundle.repro_note:
        text += f"\n\n{bundle.repro_note}"
    return text


def _input_flags(run_inputs: dict[str, Any]) -> list[str]:
    """The CLI flags that feed a re-run what the recorded run compared."""
    flags: list[str] = []
    for key, flag in (("inputs_file", "--inputs"), ("extra_inputs", "--inputs"), ("input_specs", "--input"), ("onnx_path", "--onnx")):
        value = run_inputs.get(key)
        for v in value if isinstance(value, list) else [value] if value else []:
            flags += [flag, _shell_word(str(v))]
    for key, flag in (("seed", "--seed"), ("trials", "--trials")):
        if key in run_inputs:
            flags += [flag, str(run_inputs[key])]
    return flags


def full_attributes(node: NodeRecord) -> str:
    """Every attribute of ``node``, whole: ``kernel_shape`` must never hide behind ``strides``."""
    return ", ".join(f"{k}={_attr(v)}" for k, v in node.attributes.items())


def _attr(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _framework_op(fd: FirstDivergent) -> str:
    target = fd.framework.target.replace("aten.", "aten::").removesuffix(".default")
    return target or fd.framework.fx_node or fd.onnx_node


def _symptom(fd: FirstDivergent) -> str:
    """``: PyTorch +3.1416, onnxruntime -3.1416 at y=+0.0, x=-1.4`` or the size of the error."""
    w = fd.worst or {}
    nonfinite = nonfinite_sentence(fd.metrics, w)
    if nonfinite:
        return f": {nonfinite}"
    if "expected" in w:
        inputs = ", ".join(f"{k}={value_text(v)}" for k, v in list((w.get("inputs") or {}).items())[:3])
        at = f" at {inputs}" if inputs else ""
        expected, actual = pair_text(w["expected"], w["actual"])
        side = "TensorFlow" if tf2onnx_wording.is_tensorflow(fd) else "PyTorch"
        return f": {side} {expected}, onnxruntime {actual}{at}"
    m = fd.metrics
    if m.reason:
        return f": {m.reason}"
    return f": max_abs {num(m.max_abs)} on {m.mismatch_fraction:.1%} of elements"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _shell_word(text: str) -> str:
    safe = all(c.isalnum() or c in "-_./:=@%+," for c in text)
    return text if safe and text else "'" + text.replace("'", "'\\''") + "'"


