"""One sweep on two releases of a converter component, then what changed (issue #23 point 6).

    .venv/bin/python benchmarks/cross_release.py --package onnxscript --old 0.6.2 --new 0.7.2 \\
        --zoo transformers --limit 40 --out /tmp/xrel

A team upgrading torch's exporter stack wants to know, before it upgrades, which of its
models newly diverge or newly pass. This runs the same ``nodebisect sweep`` (the same
models, the same nodebisect checkout) once per release and then ``nodebisect sweep
--compare OLD NEW``.

Each release lives in a venv of its own under ``--out``: the venv holds only that release of
``--package`` (``pip install --no-deps --target``) and reaches everything else through the
current interpreter's site-packages (a ``.pth`` line calling ``site.addsitedir``), so two
releases install side by side in seconds without a second torch. A release equal to the
installed one runs in the current interpreter. A pure-Python component (onnxscript, onnx-ir,
transformers) or one whose wheel carries its own binaries (onnxruntime) installs this way; one
built against torch's C++ ABI does not.

``--new-from DIR ...`` takes the new release's rows from sweeps already run with it (the
fleet's ``--work`` folders: same checkout, same models), keeping the models the old sweep ran.

Writes into ``--out``: ``PACKAGE-VERSION/`` (each sweep: rows, sweep.md), ``compare.txt``
and ``compare.json`` (``nodebisect.sweep-diff/1``), and prints the comparison.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def interpreter_for(package: str, version: str, out: Path) -> str:
    """A Python that imports ``package==version`` first and everything else from this one."""
    try:
        if metadata.version(package) == version:
            return sys.executable
    except metadata.PackageNotFoundError:
        pass
    venv = out / f"venv-{package}-{version}"
    python = venv / "bin" / "python"
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    if not (site / f".{package}-{version}.ok").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site.mkdir(parents=True, exist_ok=True)
        # Its own site-packages comes first; the current one's (with its .pth files: the editable
        # nodebisect) after it.
        (site / "zz_parent.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), f"{package}=={version}"],
                       check=True)
        (site / f".{package}-{version}.ok").write_text("")
    found = subprocess.run([str(python), "-c", f"from importlib import metadata; print(metadata.version({package!r}))"],
                           capture_output=True, text=True, check=True, cwd=out).stdout.strip()
    if found != version:
        raise SystemExit(f"cross_release: {venv} imports {package} {found}, not {version}")
    return str(python)


def sweep(python: str, target: Path, args: argparse.Namespace) -> float:
    """The sweep in ``python``; resumed when ``target`` holds rows. Returns its elapsed seconds."""
    cmd = [python, "-m", "nodebisect.sweep.cli", "--out", str(target), "--jobs", str(args.jobs), "--timeout", str(args.timeout), "-q"]
    for zoo in args.zoo:
        cmd += ["--zoo", zoo]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.filter:
        cmd += ["--filter", args.filter]
    if (target / "sweep.jsonl").exists():
        cmd.append("--resume")
    start = time.monotonic()
    print(f"cross_release: {target.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=False, cwd=target.parent)
    return time.monotonic() - start


def rows_from(folders: list[str], old: Path, target: Path, package: str, version: str) -> Path:
    """``target/sweep.jsonl``: the rows of ``folders`` for the models ``old`` ran, checked to be on ``version``."""
    import json

    names = {json.loads(line)["name"] for line in (old / "sweep.jsonl").read_text().splitlines() if line.strip()}
    kept = []
    for folder in folders:
        for line in (Path(folder) / "sweep.jsonl").read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("name") in names:
                found = (row.get("environment") or {}).get(package)
                if found not in (None, version):
                    raise SystemExit(f"cross_release: {folder} ran {row['name']} on {package} {found}, not {version}")
                kept.append(line)
    target.mkdir(parents=True, exist_ok=True)
    (target / "sweep.jsonl").write_text("\n".join(kept) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", default="onnxscript")
    parser.add_argument("--old", required=True, help="the release upgraded from")
    parser.add_argument("--new", required=True, help="the release upgraded to")
    parser.add_argument("--zoo", action="append", default=[], help="zoo family (repeatable; default transformers)")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--filter", default="")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default="cross-release-out")
    parser.add_argument("--new-from", nargs="+", default=[], metavar="DIR",
                        help="sweep folders already run on --new (e.g. the fleet's): their rows are the new side")
    args = parser.parse_args(argv)
    args.zoo = args.zoo or ["transformers"]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for version in (args.old, args.new):
        target = out / f"{args.package}-{version}"
        if version == args.new and args.new_from:
            dirs.append(rows_from(args.new_from, dirs[0], target, args.package, version))
            continue
        python = interpreter_for(args.package, version, out)
        seconds = sweep(python, target, args)
        print(f"cross_release: {args.package} {version}: {seconds:.0f} s", file=sys.stderr, flush=True)
        dirs.append(target)
    compared = subprocess.run([sys.executable, "-m", "nodebisect.sweep.cli", "--compare", *map(str, dirs),
                               "--json", str(out / "compare.json")], capture_output=True, text=True, cwd=out)
    (out / "compare.txt").write_text(compared.stdout)
    print(compared.stdout + compared.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
