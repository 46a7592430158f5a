#!/usr/bin/env python3
"""Runs the bench targets (and optionally bench/compare_reference.sh) and
regenerates BENCHMARKS.md from what they measured.

Every bench writes its figures as JSON lines to `$MPO_BENCH_RESULTS/<bench>.jsonl`
(benches/common/mod.rs); this script runs each one with `cargo bench --bench
NAME`, stores the command, date, duration and load average beside them
(`<bench>.meta.json`), and renders every result file in the folder, so a
bench rerun alone (`--bench train`) keeps the others' figures. The machine
(CPU model, cores, memory, OS, compiler) is read off this machine, never typed.

    python3 bench/benchmarks.py                  # every bench, full sizes
    python3 bench/benchmarks.py --quick          # tiny sizes (checks, not figures)
    python3 bench/benchmarks.py --compare        # also bench/compare_reference.sh
    python3 bench/benchmarks.py --bench world --bench runner
    python3 bench/benchmarks.py --render-only    # BENCHMARKS.md from the stored results

Standard library only; needs cargo (and what each bench needs: the
sciworld bench skips itself without ScienceWorld).
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (target, what it measures); the order of BENCHMARKS.md.
BENCHES = [
    ("world", "built-in world: env steps/s on one core"),
    ("runner", "Parquet write/read of the episodes table; executor overhead per item"),
    ("openai_client", "OpenAI client against an in-process instant server: calls/s and added latency"),
    ("report", "`mpo-run report` on synthetic results (about 1M episodes in full mode)"),
    ("local_model", "local models on the CPU: prefill/decode tokens/s, multi-turn chat"),
    ("vs_torch", "local inference beside PyTorch/transformers: the quickstart agent's shape, same ids, interleaved A/B, 2 threads each"),
    ("train", "SFT and DPO training tokens/s on the CPU"),
    ("affinity", "two replicas with modelled prefix caches: least-outstanding routing vs episode affinity, one run"),
    ("engines", "one planner SFT job through burn (in-process) and TRL (torchrun), same hyper-parameters, one run"),
    ("sciworld", "ScienceWorld through the bridge workers vs direct Python calls"),
]
COMPARE = ("compare", "mpo-run vs a released-style Python loop, same HTTP workload, one run")


def results_dir():
    if os.environ.get("MPO_BENCH_RESULTS"):
        return Path(os.environ["MPO_BENCH_RESULTS"])
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "bench-results"


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_one(name, cmd, shown, env, out):
    """Runs `cmd`; its figures land in `out/<name>.jsonl`, this run's facts in `.meta.json`."""
    (out / f"{name}.jsonl").unlink(missing_ok=True)
    print(f"== {shown}", file=sys.stderr, flush=True)
    meta = {"command": shown, "date": now(), "load_before": os.getloadavg()[0]}
    t = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    meta.update(seconds=round(time.monotonic() - t, 1), load_after=os.getloadavg()[0], exit=rc)
    (out / f"{name}.meta.json").write_text(json.dumps(meta) + "\n")
    return rc


def sh(*cmd):
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    osname = platform.system()
    try:
        rel = dict(l.split("=", 1) for l in Path("/etc/os-release").read_text().splitlines() if "=" in l)
        osname = rel.get("PRETTY_NAME", osname).strip('"')
    except OSError:
        pass
    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dirty = [l for l in sh("git", "status", "--porcelain").splitlines() if not l.endswith("BENCHMARKS.md")]
    commit = sh("git", "rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")
    return [
        ("CPU", cpu),
        ("cores", f"{os.cpu_count()} logical, {avail} available to the benches"),
        ("memory", mem),
        ("OS", f"{osname}, {platform.system()} {platform.release()} {platform.machine()}"),
        ("compiler", sh("rustc", "-V")),
        ("Python (compare script)", platform.python_version()),
        ("commit", commit),
    ]


def fmt(v):
    if v != v:  # NaN
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if a >= 0.1 or a == 0 else f"{v:.3g}"


def render(out, target, mode_line, command_line):
    cores = os.cpu_count() or 1
    lines = [
        "# Benchmarks",
        "",
        f"Generated on {now()} by",
        "",
        f"    {command_line}",
        "",
        "Do not edit by hand: every figure below comes from a bench's JSON lines",
        "(`target/bench-results/`); rerun the command to regenerate (docs/benchmarks.md).",
        "",
        mode_line,
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine()]
    lines += [
        "",
        f"Each section gives the 1-minute load average before and after its run: above {cores} (the",
        "core count) means other work shared the machine and the figures are lower bounds.",
    ]
    failed = []
    for name, what in BENCHES + [COMPARE]:
        meta_path, res_path = out / f"{name}.meta.json", out / f"{name}.jsonl"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        rows = [json.loads(l) for l in res_path.read_text().splitlines() if l.strip()] if res_path.exists() else []
        figs = [r for r in rows if "figure" in r]
        quick = any(r.get("quick") for r in rows)
        lines += [
            "",
            f"## {name}",
            "",
            f"{what}.",
            "",
            f"`{meta['command']}` · {meta['date']} · {meta['seconds']} s (build included) · "
            f"load {meta['load_before']:.2f} → {meta['load_after']:.2f}" + (" · **quick mode**" if quick else ""),
            "",
        ]
        if meta["exit"] != 0:
            failed.append(name)
            lines += [f"**Failed** (exit status {meta['exit']}); figures written before the failure follow.", ""]
        for r in rows:
            if "skipped" in r:
                lines += [f"Skipped: {r['skipped']}", ""]
        if figs:
            lines += ["| figure | value | unit | setup |", "|---|--:|---|---|"]
            lines += [f"| {r['figure']} | {fmt(r['value'])} | {r['unit']} | {r['detail']} |" for r in figs]
    target.write_text("\n".join(lines) + "\n")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (MPO_BENCH_QUICK=1)")
    ap.add_argument("--compare", action="store_true", help="also run bench/compare_reference.sh")
    ap.add_argument("--episodes", type=int, default=40, help="compare: episodes (default 40)")
    ap.add_argument("--latency-ms", type=int, default=50, help="compare: chat latency (default 50)")
    ap.add_argument("--bench", action="append", choices=[b for b, _ in BENCHES], help="only these benches (repeatable)")
    ap.add_argument("--render-only", action="store_true", help="run nothing; render the stored results")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    a = ap.parse_args()

    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPO_BENCH_RESULTS=str(out.resolve()))
    prefix = ""
    if a.quick:
        env["MPO_BENCH_QUICK"] = "1"
        prefix = "MPO_BENCH_QUICK=1 "
    rc = 0
    if not a.render_only:
        for name in a.bench or [b for b, _ in BENCHES]:
            rc |= run_one(name, ["cargo", "bench", "--bench", name], f"{prefix}cargo bench --bench {name}", env, out)
        if a.compare:
            cmd = ["bench/compare_reference.sh", str(a.episodes), str(a.latency_ms)]
            rc |= run_one("compare", cmd, shlex.join(cmd), env, out)

    argv = ["python3", "bench/benchmarks.py"] + sys.argv[1:]
    metas = [json.loads((out / f"{b}.meta.json").read_text()) for b, _ in BENCHES if (out / f"{b}.meta.json").exists()]
    quick_runs = [m for m in metas if m["command"].startswith("MPO_BENCH_QUICK=1")]
    if quick_runs and len(quick_runs) == len(metas):
        mode = ("Mode: **quick** (`MPO_BENCH_QUICK=1`: tiny sizes, a check that every bench runs; "
                "the figures are not representative of full runs).")
    elif quick_runs:
        mode = "Mode: mixed: sections marked *quick mode* ran with tiny sizes (`MPO_BENCH_QUICK=1`); the others at full size."
    else:
        mode = "Mode: full (`cargo bench` sizes)."
    failed = render(out, Path(a.out), mode, shlex.join(argv))
    print(f"wrote {a.out}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    sys.exit(1 if rc or failed else 0)


if __name__ == "__main__":
    main()
