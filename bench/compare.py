"""Side-by-side training-step benchmark: mmvae_lite vs the authors' code (and MultiVae), same machine, same run.

    MMVAE_AUTHORS_SRC=/path/to/mmvae/src python -m bench.compare --reps 2
    MMVAE_AUTHORS_SRC=... MMVAE_MULTIVAE_PATH=$PWD/.multivae python -m bench.compare --reps 2 --multivae

Cases (MNIST-SVHN paper networks, batch 128): the paper's K=30 DReG stratified objective (their
``m_dreg_looser``), the same at K=1, and the importance-sampled ELBO (our ``m_elbo_is``, their
``m_elbo``, which always draws one sample). Every measurement is a separate ``python -m bench.bench``
process (so peak RSS is per implementation); each repetition runs the implementations back to
back, each going first in turn, and a speed ratio is the median of the per-repetition ratios
(robust to load drifting between repetitions). ``--eval`` adds IWAE-1000 timings. MultiVae's
MMVAE (``--multivae``) has no importance-sampled ELBO, so it skips that case.

The machine is shared: ``--quiet`` waits (up to ``--quiet-timeout`` s) before each process until
other processes use less than ``--quiet-threshold`` of the CPU. The table reports the processes'
CPU utilisation so contended measurements are visible.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "k30": ("K=30 DReG stratified (paper)", ["--objective", "m_dreg_stratified", "--K", "30", "--steps", "5", "--warmup", "1"]),
    "k1": ("K=1 DReG stratified", ["--objective", "m_dreg_stratified", "--K", "1", "--steps", "40", "--warmup", "5"]),
    "elbo": ("IS-ELBO (K=1)", ["--objective", "m_elbo_is", "--K", "1", "--steps", "40", "--warmup", "5"]),
    # not in the default set: the first 40 steps of a run from scratch on a stream of training pairs
    # (samples/s = 40 batches / total time), where the row-sparse backward switches on after 2-3 steps
    "run30": ("K=30 DReG, first 40 steps of a run", ["--objective", "m_dreg_stratified", "--K", "30", "--stream",
                                                     "--steps", "40", "--warmup", "0"]),
}
SKIP = {"multivae": ("elbo",)}   # MultiVae's MMVAE offers no importance-sampled ELBO
OWNER = {"authors": "the authors'", "multivae": "MultiVae's"}
EVAL_CASE = ("IWAE-1000 eval", ["--eval", "--eval-K", "1000", "--eval-pairs", "24", "--steps", "1", "--warmup", "0"])


def cpu_busy_fraction(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``interval`` seconds (Linux /proc/stat; 0 elsewhere)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    try:
        t0, i0 = snap()
        time.sleep(interval)
        t1, i1 = snap()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(threshold: float, timeout: float) -> float:
    """Wait until the CPU is less than ``threshold`` busy (or ``timeout`` s pass); returns the last reading."""
    end = time.time() + timeout
    busy = cpu_busy_fraction()
    while busy > threshold and time.time() < end:
        busy = cpu_busy_fraction(2.0)
    return busy


def run_one(impl: str, extra: list[str], common: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench", "--impl", impl, *common, *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
        "step_s": statistics.median(r["step_s_median"] for r in rows),
        "cpu_s": statistics.median(r["cpu_s_median"] for r in rows),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "step_rss_mb": max(r["peak_rss_mb"] - r["rss_before_mb"] for r in rows),
        "cpu_util": min(r.get("cpu_utilisation", float("nan")) for r in rows),
        "s_per_1000_pairs": statistics.median(r["s_per_1000_pairs"] for r in rows) if "s_per_1000_pairs" in rows[0] else None,
        "gflop": statistics.median(r["gflop_per_step"] for r in rows) if "gflop_per_step" in rows[0] else None,
        "gflops": statistics.median(r["gflops_achieved"] for r in rows) if "gflops_achieved" in rows[0] else None,
    }


def _num(x: Optional[float], fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(results: dict[str, dict[str, list[dict[str, Any]]]], labels: dict[str, str], meta: dict[str, Any]) -> str:
    """The table: one row per case and implementation; each other implementation's row carries our speed-up over it."""
    out = [f"Device: {meta['device']}; torch {meta['torch']}; {meta['threads']} threads; {meta['reps']} repetitions "
           f"(medians; RSS: max); {meta['when']}.", "",
           "| case | impl | samples/s | median step (s) | CPU s / step | peak RSS (MB) | step RSS (MB) | min CPU util "
           "| GFLOP / step | GFLOP/s | ours ÷ this, wall (per rep) | ours ÷ this, CPU time |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ceilings = []
    peak = meta.get("peak_gflops")
    for case, by_impl in results.items():
        summary = {impl: summarise(rows) for impl, rows in by_impl.items() if rows}
        ours_rows = by_impl.get("mmvae_lite", [])
        for impl, s in summary.items():
            pairs = list(zip(ours_rows, by_impl[impl])) if impl != "mmvae_lite" else []
            ratios = [o["samples_per_s"] / a["samples_per_s"] for o, a in pairs]
            cratios = [a["cpu_s_median"] / o["cpu_s_median"] for o, a in pairs]
            r = (f"**{statistics.median(ratios):.2f}x** ({', '.join(f'{x:.2f}' for x in ratios)}) | "
                 f"**{statistics.median(cratios):.2f}x** ({', '.join(f'{x:.2f}' for x in cratios)})" if ratios else " | ")
            extra = f" ({s['s_per_1000_pairs']:.0f} s / 1000 pairs)" if s["s_per_1000_pairs"] is not None else ""
            out.append(f"| {labels[case]} | {impl} | {s['samples_per_s']:.1f}{extra} | {s['step_s']:.3f} | "
                       f"{s['cpu_s']:.3f} | {s['peak_rss_mb']:.0f} | {s['step_rss_mb']:.0f} | {s['cpu_util']:.2f} | "
                       f"{_num(s['gflop'], '.2f')} | {_num(s['gflops'], '.0f')} | {r} |")
            o = summary.get("mmvae_lite")
            if peak and o and o["gflop"] and impl != "mmvae_lite":
                floor = o["gflop"] / peak
                ceilings.append(f"* {labels[case]}: ours {o['gflop']:.2f} GFLOP / step, at the machine's {peak:.0f} GFLOP/s "
                                f"at least {floor * 1e3:.0f} ms; {OWNER.get(impl, impl)} step takes {s['step_s'] * 1e3:.0f} ms, so no "
                                f"implementation of the same arithmetic can exceed **{s['step_s'] / floor:.2f}x** over it "
                                f"here (ours now runs at {o['gflops']:.0f} GFLOP/s, {o['gflops'] / peak:.0%} of peak).")
    if ceilings:
        out += ["", f"Roofline (attainable float32 peak {meta['peak_gflops']:.0f} GFLOP/s, `python -m bench.bench --peak`: "
                    f"{meta.get('peak_detail', '')}):", *ceilings]
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--cases", default="k30,k1,elbo", help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--eval", action="store_true", help="also time IWAE-1000 (24 pairs, scaled to 1000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="wait for an idle CPU before each process")
    p.add_argument("--quiet-threshold", type=float, default=0.15)
    p.add_argument("--quiet-timeout", type=float, default=300.0)
    p.add_argument("--timeout", type=float, default=1800.0, help="per process")
    p.add_argument("--out", default=None, help="append every JSON line to this file")
    p.add_argument("--markdown", default=None, help="write the table to this file")
    p.add_argument("--ours-only", action="store_true", help="skip the other implementations (no MMVAE_AUTHORS_SRC needed)")
    p.add_argument("--multivae", action="store_true",
                   help="also time MultiVae's MMVAE (bench/multivae.py; its package from $MMVAE_MULTIVAE_PATH)")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "mnist-svhn"], help="see bench.bench")
    p.add_argument("--data-root", default=None)
    p.add_argument("--state", default=None, help="weights for both implementations (see bench.pretrain)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment for the benchmark processes, e.g. OMP_WAIT_POLICY=PASSIVE")
    args = p.parse_args(argv)
    impls = ["mmvae_lite"] if args.ours_only else ["authors", "mmvae_lite"] + (["multivae"] if args.multivae else [])
    if not args.ours_only and not os.environ.get("MMVAE_AUTHORS_SRC"):
        raise SystemExit("set MMVAE_AUTHORS_SRC to the src/ directory of a checkout of iffsid/mmvae (or --ours-only)")
    cases = {c: CASES[c] for c in args.cases.split(",")}
    if args.eval:
        cases["eval"] = EVAL_CASE
    labels = {c: v[0] for c, v in cases.items()}
    common = ["--threads", str(args.threads), "--data", args.data, "--flops"]
    common += ["--data-root", args.data_root] if args.data_root else []
    common += ["--state", args.state] if args.state else []
    for kv in args.env:
        name, _, value = kv.partition("=")
        os.environ[name] = value
    results: dict[str, dict[str, list]] = {c: {i: [] for i in impls} for c in cases}
    meta: dict[str, Any] = {}
    if args.quiet:
        wait_quiet(args.quiet_threshold, args.quiet_timeout)
    peak = run_one("mmvae_lite", ["--peak"], ["--threads", str(args.threads)], args.timeout)["gflops"]
    meta.update(peak_gflops=peak["peak"],
                peak_detail=", ".join(f"{k} {v:.0f}" for k, v in peak.items() if k != "peak"))
    print(f"attainable peak: {meta['peak_detail']} GFLOP/s", file=sys.stderr, flush=True)
    for rep in range(args.reps):
        for case, (label, extra) in cases.items():
            order = impls[rep % len(impls):] + impls[:rep % len(impls)]   # each goes first in turn
            for impl in order:
                if case in SKIP.get(impl, ()):
                    continue
                busy = wait_quiet(args.quiet_threshold, args.quiet_timeout) if args.quiet else None
                r = run_one(impl, extra, common, args.timeout)
                r["cpu_busy_before"] = busy
                results[case][impl].append(r)
                meta.update(device=r["device"], torch=r["torch"], threads=r["threads"])
                print(f"[rep {rep + 1}/{args.reps}] {label:30s} {impl:10s} {r['samples_per_s']:9.2f} samples/s  "
                      f"step {r['step_s_median']:.3f} s  peak {r['peak_rss_mb']:.0f} MB  "
                      f"cpu util {r.get('cpu_utilisation', float('nan')):.2f}", file=sys.stderr, flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    streamed = all("--stream" in extra for _, extra in cases.values())
    data = "a new batch of MNIST-SVHN training pairs each step" if streamed else args.data
    meta.update(reps=args.reps, when=time.strftime("%Y-%m-%d %H:%M") + f"; data {data}"
                + (f", weights {Path(args.state).name}" if args.state else ", fresh weights (seed 1)")
                + (f"; env {' '.join(args.env)}" if args.env else ""))
    table = markdown(results, labels, meta)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
