#!/usr/bin/env python3
"""Every figure of the benchmark against an earlier commit's, taking turns.

Usage: scripts/bench-against.sh REV [--rounds N] [--only FIGURE,...]

Builds REV in a git worktree (target/against/REV, with its own target
directory: the first build of a commit takes as long as a clean build), then
runs N rounds (5 by default), each running REV's harness and then this tree's
with the same arguments, and prints for each figure both sides' numbers over
the rounds, their medians and the ratio of the medians. A figure counts as
slower when the ratio of the medians is more than 5% the wrong way AND the
ranges of the two sides do not overlap (the run-to-run range of this machine is
often wider than 5%). Writes target/bench/against-REV.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"([0-9][0-9.]*)\s*(µs|ms|s|KiB|MiB|/s|%)?")


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def build(rev: str) -> Path:
    """REV's harness, built in its own worktree; returns that worktree."""
    tree = ROOT / "target" / "against" / rev
    if not tree.exists():
        sh("git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev)
    env = dict(os.environ, CARGO_TARGET_DIR=str(tree / "target"))
    sh("cargo", "build", "--release", "--locked", "--workspace", "--bins", cwd=tree, env=env)
    return tree


def run(tree: Path, args: list) -> dict:
    """One run of the harness of `tree`: its figures by name."""
    exe = tree / "target" / "release" / "wasm-sup-bench"
    sh(str(exe), *args, stdout=subprocess.DEVNULL, cwd=tree)
    stem = "bench-smoke" if "--smoke" in args else "bench"
    data = json.loads((tree / "target" / "bench" / f"{stem}.json").read_text())
    return {f["figure"]: f["result"] for f in data["figures"]}


SCALE = {"µs": ("µs", 1.0), "ms": ("µs", 1e3), "s": ("µs", 1e6), "MiB": ("KiB", 1024.0)}


def numbers(result: str) -> list:
    """The numbers of a result, each with its unit ("86 µs / 195 µs"),
    times in µs and sizes in KiB (a p50 printed as 984 µs in one run and
    1.02 ms in the next compares as it should)."""
    out = []
    for n, unit in NUMBER.findall(result.replace(",", "")):
        unit, scale = SCALE.get(unit, (unit, 1.0))
        out.append((float(n) * scale, unit))
    return out


def higher_is_better(figure: str, unit: str) -> bool:
    return unit == "/s" or "kept" in figure


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rev")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", a.rev],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    args = (["--only", a.only] if a.only else []) + (["--smoke"] if a.smoke else [])
    base = build(rev)
    ours, theirs = [], []
    for i in range(a.rounds):
        print(f"round {i + 1} of {a.rounds}: {rev}, then this tree", file=sys.stderr)
        theirs.append(run(base, args))
        ours.append(run(ROOT, args))
    rows, slower = [], []
    for figure in sorted(set(ours[0]) | set(theirs[0])):
        if figure not in ours[0] or figure not in theirs[0]:
            side = "this tree" if figure in ours[0] else rev
            print(f"- {figure}: only in {side}")
            continue
        o = [numbers(r[figure]) for r in ours if figure in r]
        t = [numbers(r[figure]) for r in theirs if figure in r]
        width = min(len(x) for x in o + t)
        for k in range(width):
            unit = o[0][k][1]
            ov, tv = [x[k][0] for x in o], [x[k][0] for x in t]
            om, tm = statistics.median(ov), statistics.median(tv)
            ratio = om / tm if tm else float("inf")
            up = higher_is_better(figure, unit)
            worse = ratio < 0.95 if up else ratio > 1.05
            apart = (max(ov) < min(tv)) if up else (min(ov) > max(tv))
            row = {
                "figure": figure, "number": k + 1, "unit": unit,
                "this_tree": ov, rev: tv, "ratio_of_medians": ratio,
                "slower": worse and apart,
            }
            rows.append(row)
            mark = "SLOWER" if row["slower"] else ("within range" if worse else "kept")
            print(
                f"- {figure} [#{k + 1} {unit}]: this tree {min(ov):g} to {max(ov):g} "
                f"(median {om:g}); {rev} {min(tv):g} to {max(tv):g} (median {tm:g}); "
                f"{ratio:.2f}x: {mark}"
            )
            if row["slower"]:
                slower.append(figure)
    out = ROOT / "target" / "bench" / f"against-{rev}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rev": rev, "rounds": a.rounds, "args": args, "rows": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}; slower than {rev}: {', '.join(sorted(set(slower))) or 'nothing'}")


if __name__ == "__main__":
    main()
