"""nodebisect vs its peers on real models with one injected fault (issue #3 item 5).

For each model: export it once with the dynamo exporter, edit ONE node in the middle
of the ONNX graph (a LayerNormalization epsilon set to 0.5; an Add turned into Sub
where a graph has no LayerNormalization) and save ``faulted.onnx``. Then, each tool in
its own subprocess (so its peak RSS is its own), on the same model, weights and inputs:

  nb-all      nodebisect.locate(model, args, onnx_path=faulted.onnx, strategy="all")
  nb-bisect   nodebisect.locate(..., strategy="bisect")
  verify      torch.onnx.export + torch.onnx.verification.verify_onnx_program(
              ONNXProgram(faulted, exported_program), args, compare_intermediates=True)
              -- one full-model ORT session per compared value: only the first
              ``--verify-cap`` values are run, the rest is extrapolated (time per value x
              number of values). Which values it flags is computed with the peer's own
              interpreter and threshold, fed from one all-outputs run (cheap and identical
              up to ORT fusions).
  polygraphy  polygraphy's OnnxrtRunner on faulted.onnx with every output marked
              (``polygraphy run --onnxrt --onnx-outputs mark all``): capture only, no
              PyTorch reference, so it names nothing.
  floor       one torch.onnx.export + one plain eager forward + one ORT session with
              every output marked and one run.

Times are wall clock after the model is built and the libraries imported; peak RSS is
the subprocess's VmHWM, reset (``/proc/self/clear_refs``) after the model is built, so
it counts the model's weights plus what the tool adds. ORT sessions are counted by
wrapping ``onnxruntime.InferenceSession.__init__`` in the subprocess.

    .venv/bin/python benchmarks/bench_locate.py                       # every model
    .venv/bin/python benchmarks/bench_locate.py --models mlp --quick  # while debugging
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("mlp", "bert", "gpt2", "vit", "llama")
TOOLS = ("nb-all", "nb-bisect", "verify", "polygraphy", "floor")
SEQ = 32


# ---------------------------------------------------------------------------- models
def build_model(name: str, quick: bool):
    """(module, args) with fixed seeds: every subprocess builds the same weights/inputs."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class HF(nn.Module):  # the hidden states only: a plain tensor output
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x, return_dict=False)[0]

    def set_attn(cfg, impl="sdpa"):
        cfg._attn_implementation = impl
        return cfg

    if name == "mlp":
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.fc1, self.fc2, self.ln = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.LayerNorm(d)

            def forward(self, x):
                return self.ln(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))

        class StackedMLP(nn.Module):
            def __init__(self, d, n):
                super().__init__()
                self.blocks = nn.Sequential(*[Block(d) for _ in range(n)])

            def forward(self, x):
                return self.blocks(x)

        d, n = (64, 20) if quick else (256, 200)
        return StackedMLP(d, n).eval(), (torch.randn(4, d),)
    if name == "bert":
        from transformers import BertConfig, BertModel

        cfg = BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256) if quick else BertConfig()
        m = BertModel(set_attn(cfg), add_pooling_layer=False)
        return HF(m).eval(), (torch.randint(0, cfg.vocab_size, (1, SEQ)),)
    if name == "gpt2":
        from transformers import GPT2Config, GPT2Model

        cfg = GPT2Config(n_layer=2, n_embd=128, n_head=2) if quick else GPT2Config()
        cfg.use_cache = False
        m = GPT2Model(set_attn(cfg))
        return HF(m).eval(), (torch.randint(0, cfg.vocab_size, (1, SEQ)),)
    if name == "vit":
        from transformers import ViTConfig, ViTModel

        cfg = ViTConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256, image_size=64) if quick else ViTConfig()
        m = ViTModel(set_attn(cfg), add_pooling_layer=False)
        return HF(m).eval(), (torch.randn(1, 3, cfg.image_size, cfg.image_size),)
    if name == "llama":
        from transformers import LlamaConfig, LlamaModel

        if quick:
            cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=1000)
        else:
            cfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)
        cfg.use_cache = False
        m = LlamaModel(set_attn(cfg))
        return HF(m).eval(), (torch.randint(0, cfg.vocab_size, (1, SEQ)),)
    raise SystemExit(f"unknown model {name!r}")


# ---------------------------------------------------------------------------- helpers
def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class SessionCounter:
    def __init__(self) -> None:
        import onnxruntime as ort

        self.count = 0
        cls = ort.InferenceSession
        orig = cls.__init__
        counter = self

        def init(self_, *a, **k):
            counter.count += 1
            return orig(self_, *a, **k)

        cls.__init__ = init


def quiet():
    from nodebisect.frontends.dynamo import quiet_torch

    return quiet_torch()


def torch_export(model, args):
    import torch

    with quiet():
        return torch.onnx.export(model, args, dynamo=True, optimize=True, verbose=False, external_data=False)


def feeds_for(proto, args) -> dict:
    inits = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    return {n: a.detach().numpy() for n, a in zip(names, args)}


def mark_all_outputs(proto):
    """A copy of ``proto`` whose graph outputs are every node output (typed where known)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    types = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for o in node.output:
            if o and o not in have:
                have.add(o)
                model.graph.output.append(types.get(o) or onnx.ValueInfoProto(name=o))
    return model


# ---------------------------------------------------------------------------- workers
def work_prepare(model_name: str, quick: bool, workdir: Path) -> dict:
    import onnx

    model, args = build_model(model_name, quick)
    t = time.perf_counter()
    program = torch_export(model, args)
    export_s = time.perf_counter() - t
    proto = program.model_proto
    nodes = list(proto.graph.node)
    n = len(nodes)

    consts = {t.name for t in proto.graph.initializer} | {o for nd in nodes if nd.op_type == "Constant" for o in nd.output}

    def pick(op):
        # an Add must join two computed values (a residual), not add a constant such as an epsilon
        idx = [i for i, nd in enumerate(nodes) if nd.op_type == op and (op != "Add" or not set(nd.input) & consts)]
        return nodes[min(idx, key=lambda i: abs(i - n // 2))] if idx else None

    node = pick("LayerNormalization")
    if node is not None:
        attrs = [a for a in node.attribute if a.name == "epsilon"]
        if attrs:
            attrs[0].f = 0.5
        else:
            node.attribute.append(onnx.helper.make_attribute("epsilon", 0.5))
        fault = "LayerNormalization epsilon -> 0.5"
    else:
        node = pick("Add")
        node.op_type = "Sub"
        fault = "Add -> Sub"
    path = workdir / f"{model_name}.faulted.onnx"
    onnx.save(proto, str(path))
    ops = {}
    for nd in nodes:
        ops[nd.op_type] = ops.get(nd.op_type, 0) + 1
    return {
        "onnx_path": str(path),
        "fault_node": node.name,
        "fault_value": node.output[0],
        "fault_index": nodes.index(node),
        "fault": fault,
        "onnx_nodes": n,
        "export_s": export_s,
        "onnx_mb": path.stat().st_size / 2**20,
        "top_ops": sorted(ops.items(), key=lambda kv: -kv[1])[:6],
    }


def work_nodebisect(model, args, meta: dict, strategy: str) -> dict:
    import nodebisect

    t = time.perf_counter()
    res = nodebisect.locate(model, args, onnx_path=meta["onnx_path"], strategy=strategy)
    wall = time.perf_counter() - t
    fd = res.first_divergent
    timings = res.stats.get("timings", {})
    return {
        "wall_s": wall,
        "after_export_s": wall - timings.get("export", 0.0) - timings.get("load", 0.0),
        "search_sessions": res.stats.get("ort_sessions"),
        "compared_values": res.stats.get("compared_values"),
        "mapped_values": res.stats.get("mapped_values"),
        "timings": timings,
        "verdict": res.verdict,
        "named": fd.onnx_node if fd else None,
        "cause": fd.cause if fd else None,
        "right": bool(fd and fd.onnx_node == meta["fault_node"]),
    }


def work_verify(model, args, meta: dict, cap: int) -> dict:
    import logging

    import onnx
    import onnx_ir
    import torch
    from torch.onnx._internal.exporter import _onnx_program as P
    from torch.onnx._internal.exporter import _verification as V

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    program = torch_export(model, args)
    export_s = time.perf_counter() - t0
    faulted = onnx_ir.from_proto(onnx.load(meta["onnx_path"]))
    t1 = time.perf_counter()
    onnx_program = torch.onnx.ONNXProgram(faulted, program.exported_program)
    onnx_values = V._create_value_mapping(onnx_program.model.graph)
    ep = onnx_program.exported_program
    total = sum(1 for nd in ep.graph.nodes if nd.op == "call_function" and nd.name in onnx_values)

    class Stop(Exception):
        pass

    stamps: list[float] = []

    class Capped(V._VerificationInterpreter):
        def run_node(self, n):
            if len(self.verification_infos) >= cap:
                raise Stop
            before = len(self.verification_infos)
            out = super().run_node(n)
            if len(self.verification_infos) > before:
                stamps.append(time.perf_counter())
            return out

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Capped(onnx_program)
        flat, _ = ep._get_flat_args_with_check(args, {})
        try:
            interp.run(*flat)
        except Stop:
            pass
    measured = len(interp.verification_infos)
    measured_s = time.perf_counter() - t1
    # Steady-state cost per value from the 2nd value on; the 1st carries the set-up.
    per_value = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else time.perf_counter() - t1
    setup_s = (stamps[0] - t1) - per_value if stamps else 0.0
    after_export = max(setup_s, 0.0) + per_value * total
    extrapolated = export_s + after_export

    # What the peer would flag over the whole graph: its own interpreter and threshold,
    # with compute_values fed from one all-outputs session instead of one per value.
    names = [nd.name for nd in ep.graph.nodes if nd.op == "call_function" and nd.name in onnx_values
             and onnx_values[nd.name].producer() is not None]
    with P._set_graph_outputs(onnx_program.model.graph, [onnx_values[n] for n in names]):
        outs = onnx_program(*flat)
    onnx_program.release()
    cache = dict(zip(names, outs))
    onnx_program.compute_values = lambda vals, a=(), k=None: [cache[v] for v in vals]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = V._VerificationInterpreter(onnx_program)
        full.run(*flat)
    flagged = [i.name for i in full.verification_infos if i.max_abs_diff > 0.01 or i.max_rel_diff > 0.1]
    return {
        "wall_s": extrapolated,
        "extrapolated": measured < total,
        "measured_values": measured,
        "total_values": total,
        "export_s": export_s,
        "per_value_s": per_value,
        "after_export_s": after_export,
        "measured_s": measured_s,
        "sessions_est": total,
        "flagged": len(flagged),
        "first_flagged": flagged[0] if flagged else None,
        "fault_flagged": meta["fault_value"] in flagged,
        # flagged values that come before the injected fault in the program: false alarms
        "flagged_before_fault": flagged.index(meta["fault_value"]) if meta["fault_value"] in flagged else None,
        "right": bool(flagged and flagged[0] == meta["fault_value"]),
    }


def work_polygraphy(model, args, meta: dict) -> dict:
    import onnx
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    feeds = feeds_for(onnx.load(meta["onnx_path"], load_external_data=False), args)
    t = time.perf_counter()
    loader = SessionFromOnnx(BytesFromOnnx(ModifyOutputs(OnnxFromPath(meta["onnx_path"]), outputs=constants.MARK_ALL)))
    with OnnxrtRunner(loader) as runner:
        outs = runner.infer(feeds)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "after_export_s": wall, "captured": len(outs), "right": None}


def work_floor(model, args, meta: dict) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    t = time.perf_counter()
    torch_export(model, args)
    export_s = time.perf_counter() - t
    with torch.no_grad():
        model(*args)
    proto = onnx.load(meta["onnx_path"])
    marked = mark_all_outputs(proto)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(marked.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds_for(proto, args))
    wall = time.perf_counter() - t
    return {"wall_s": wall, "after_export_s": wall - export_s, "export_s": export_s, "captured": len(outs), "right": None}


def worker(ns) -> None:
    workdir = Path(ns.workdir)
    if ns.worker == "prepare":
        out = work_prepare(ns.model, ns.quick, workdir)
    else:
        import onnx  # noqa: F401 - imported before the clock starts, for every tool alike
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        import torch

        import nodebisect  # noqa: F401

        torch.set_num_threads(ns.threads) if ns.threads else None
        meta = json.loads((workdir / f"{ns.model}.meta.json").read_text())
        model, args = build_model(ns.model, ns.quick)
        counter = SessionCounter()
        reset_peak_rss()
        base = peak_rss_mb()
        if ns.worker == "nb-all":
            out = work_nodebisect(model, args, meta, "all")
        elif ns.worker == "nb-bisect":
            out = work_nodebisect(model, args, meta, "bisect")
        elif ns.worker == "verify":
            out = work_verify(model, args, meta, ns.verify_cap)
        elif ns.worker == "polygraphy":
            out = work_polygraphy(model, args, meta)
        elif ns.worker == "floor":
            out = work_floor(model, args, meta)
        else:
            raise SystemExit(f"unknown worker {ns.worker}")
        out["peak_rss_mb"] = peak_rss_mb()
        out["rss_after_build_mb"] = base
        out.setdefault("sessions", counter.count)
        if ns.worker == "verify":
            out["sessions_measured"] = counter.count
            out["sessions"] = out["sessions_est"]
    print("BENCH_RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------- driver
def run_worker(kind: str, model: str, ns, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--workdir", str(workdir),
           "--verify-cap", str(ns.verify_cap)] + (["--quick"] if ns.quick else [])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ns.timeout)
    elapsed = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            out = json.loads(line[len("BENCH_RESULT "):])
            out["process_s"] = elapsed
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"rc={proc.returncode}: " + " | ".join(tail)[:400], "process_s": elapsed}


def fmt(x, spec=".1f", none="-"):
    return none if x is None else format(x, spec)


def report_model(name: str, meta: dict, res: dict) -> list[str]:
    n = meta["onnx_nodes"]
    lines = [f"### {name}: {n} ONNX nodes, {meta['onnx_mb']:.0f} MB; fault: {meta['fault_node']} "
             f"(#{meta['fault_index']} of {n}: {meta['fault']}); prepare-export {meta['export_s']:.1f}s", ""]
    lines.append("| tool | wall s | after export s | peak RSS MB | ORT sessions | named the injected node |")
    lines.append("|---|---:|---:|---:|---:|---|")
    for tool in TOOLS:
        r = res.get(tool)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {tool} | failed | | | | {r['error'][:160]} |")
            continue
        wall = fmt(r["wall_s"])
        sessions = str(r.get("sessions"))
        if tool.startswith("nb"):
            named = f"{'yes' if r['right'] else 'NO'} ({r['named']}, cause={r['cause']})"
            sessions = f"{r['sessions']} ({r['search_sessions']} search)" if r["sessions"] else f"{r['search_sessions']} search (+ sandboxed)"
        elif tool == "verify":
            if r["extrapolated"]:
                wall = f"~{wall} (extrap.)"
                sessions = f"~{r['total_values']} (ran {r['measured_values']})"
            named = (f"{'yes' if r['right'] else 'no'}: flags {r['flagged']} of {r['total_values']} values, "
                     f"{r.get('flagged_before_fault')} of them before the fault; first flagged {r['first_flagged']}")
        else:
            named = f"n/a: captures {r['captured']} values, no PyTorch reference"
        after = fmt(r.get("after_export_s"))
        if tool == "verify" and r["extrapolated"]:
            after = f"~{after} ({r['per_value_s']:.2f}s/value)"
        lines.append(f"| {tool} | {wall} | {after} | {fmt(r.get('peak_rss_mb'), '.0f')} | {sessions} | {named} |")
    lines.append("")
    ok = lambda t: t in res and "error" not in res[t]  # noqa: E731
    ratios = []
    for nb in ("nb-all", "nb-bisect"):
        if not ok(nb):
            continue
        parts = []
        for peer in ("verify", "polygraphy", "floor"):
            if ok(peer):
                parts.append(f"{res[nb]['wall_s'] / res[peer]['wall_s']:.2f}x {peer}")
        if ok("verify"):
            parts.append(f"verify is {res['verify']['wall_s'] / res[nb]['wall_s']:.0f}x slower")
        if parts:
            ratios.append(f"- {nb}: " + ", ".join(parts))
    if ok("nb-bisect"):
        bound = math.ceil(math.log2(n)) + 4
        s = res["nb-bisect"]["search_sessions"]
        ratios.append(f"- bisect search sessions {s} vs ceil(log2 {n})+4 = {bound}: {'met' if s <= bound else 'NOT met'}"
                      f" (all sessions incl. isolation: {res['nb-bisect']['sessions']})")
    lines.extend(ratios + [""])
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,bert,gpt2,vit,llama", help="comma list of " + ",".join(MODELS))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--quick", action="store_true", help="small configs, for debugging the script")
    ap.add_argument("--verify-cap", type=int, default=20, help="compared values verify_onnx_program really runs")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per tool subprocess")
    ap.add_argument("--json", help="write every raw result here")
    ap.add_argument("--workdir")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.worker:
        worker(ns)
        return 0
    workdir = Path(ns.workdir or tempfile.mkdtemp(prefix="bench-locate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tools = [t for t in ns.tools.split(",") if t]
    import nodebisect

    src = Path(nodebisect.__file__).parent
    commit = (src.parent / "COMMIT").read_text().strip() if (src.parent / "COMMIT").exists() else subprocess.run(
        ["git", "-C", str(src), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    print(f"# nodebisect from {src} ({commit})")
    print(f"# bench_locate: {' '.join(sys.argv)}  (cpus={os.cpu_count()}, load={os.getloadavg()[0]:.2f}, workdir={workdir})", flush=True)
    everything = {}
    for name in [m for m in ns.models.split(",") if m]:
        meta = run_worker("prepare", name, ns, workdir)
        if "error" in meta:
            print(f"### {name}: export/prepare failed: {meta['error']}\n", flush=True)
            everything[name] = {"meta": meta}
            continue
        (workdir / f"{name}.meta.json").write_text(json.dumps(meta))
        res = {}
        for tool in tools:
            res[tool] = run_worker(tool, name, ns, workdir)
            print(f"  [{name}] {tool}: {json.dumps(res[tool])[:600]}", file=sys.stderr, flush=True)
        everything[name] = {"meta": meta, "results": res, "load_after": os.getloadavg()[0]}
        print("\n".join(report_model(name, meta, res)), flush=True)
    if ns.json:
        Path(ns.json).write_text(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
