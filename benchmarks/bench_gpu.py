"""GPU benchmark of gl.train(..., backend="cuda") as users call it, with a JAX peer.

    python benchmarks/bench_gpu.py [--budget 300] [--json out.json]
    python benchmarks/bench_gpu.py --dry-run --json /tmp/b.json     # the harness, on the CPU
    python benchmarks/bench_gpu.py --summary out.json                # short table of a JSON

Problem: gl.datasets.ethanol() (m = 2565, d = 128, k = 1), loss l4, gd, configs from gl.grid
with lrs spread over [1e-6, 1e-4] (none diverges: checked over 20k NumPy steps at 1e-3).
1. Points: B in {1024, 8192} x depth {1, 3, 8} x width {1, 100} x float32/float64, plus B = 64
   at depth 3 width 1 (depth 1 has no hidden layer, so its width-100 point would repeat width 1).
   Timing rule, the same for gl.train and the JAX peer: one warm-up call (compiles, graph
   capture), one call of `--log-every` steps (setup_s: everything a call costs besides its
   steps, plus those few steps), then grow the steps until one call takes >= max(0.2 s,
   3 setup_s), and take the best of 3 calls of that many steps (fewer when one call passes the
   point's time cap).  rate = B steps / call_s: whole calls, setup included, never a slope.
   rate_ex_setup = B (steps - log_every) / (call_s - setup_s) shows the steady state apart.
   Columns: config-steps/s; % of the FP32 floor (4 m d flops per config-step at 67 TFLOP/s,
   H200 non-tensor FP32) for every row, and for float64 rows also % of the ~34 TFLOP/s FP64
   peak; the JAX peer's config-steps/s (benchmarks/jax_peer.py) and gl/JAX.
2. Figure 3: gl.grid(loss=["l2", "l4"], depth=[1, 2, 3], width=1, lr=gl.LR_GRID) (60 configs,
   each with its own loss: one train() call), 100,000 steps, log_every 1000, float64 (train's
   default) then float32; goal < 2 s per call.  A 2,000-step probe first; the full call runs
   only when the probe says it fits the budget (else the extrapolation is printed, labelled).
3. One million configs, width 1, depth 3, float32, a few hundred steps, in one call: its time
   and CuPy's memory-pool high-water mark / 1e6 = device bytes per config.  A 100,000-config
   call first; the million runs only when 10x its time fits the budget.
The JSON (--json) is rewritten after every point, so a timeout loses nothing.  --budget caps the
whole run (points until 55 % of it, Figure 3 until 75 %, then the million): what does not fit
is skipped and listed.  --dry-run runs the same code on the CPU with backend="numpy", tiny B
and step counts, the first 256 examples, and no JAX (unless --jax on).  Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, ".."))
import jax_peer  # noqa: E402  (sets XLA_PYTHON_CLIENT_* before any jax import)

import gpulinear as gl  # noqa: E402

P = 4.0
FP32_FLOPS = 67e12       # H200 SXM, FP32 non-tensor (132 SMs x 128 FFMA/clk x 2 x 1.98 GHz)
FP64_FLOPS = 34e12       # H200 SXM, FP64 non-tensor (64 DFMA/clk/SM)
LR_RANGE = (1e-6, 1e-4)
FIG3_GOAL_S = 2.0
POINT_KEYS = ("B", "depth", "width", "dtype", "status", "steps", "calls", "call_s", "rate",
              "pct_fp32_floor", "pct_fp64_peak", "setup_s", "rate_ex_setup", "short_call", "diverged",
              "jax_steps", "jax_call_s", "jax_rate", "ratio_vs_jax", "jax_note", "error")


def points(dry):
    """(B, depth, width, dtype) in order of importance (a budget cut loses the tail)."""
    Bs = {64: 2, 1024: 4, 8192: 8} if dry else {64: 64, 1024: 1024, 8192: 8192}
    out = []
    for depth, width in ((3, 1), (1, 1), (8, 1), (3, 100), (8, 100)):
        for dt in ("float32", "float64"):
            for B in ((1024, 8192, 64) if (depth, width) == (3, 1) else (1024, 8192)):
                out.append((Bs[B], depth, width, dt))
    return out


class Clock:
    """The run's budget: phases end at fractions of it (points 55 %, Figure 3 75 %)."""

    def __init__(self, budget):
        self.t0, self.budget = time.perf_counter(), float(budget)

    def elapsed(self):
        return time.perf_counter() - self.t0

    def left(self, frac=1.0):
        return self.budget * frac - self.elapsed()


def sync(backend):
    if backend == "cuda":
        import cupy
        cupy.cuda.runtime.deviceSynchronize()


def timed(fn, backend):
    sync(backend)
    t = time.perf_counter()
    out = fn()
    sync(backend)
    return time.perf_counter() - t, out


def measure(call, quantum, min_call_s, cap_s, backend="numpy"):
    """The timing rule of the module docstring for call(steps) (steps a multiple of quantum).
    Returns dict(steps, calls, call_s, setup_s, rate_ex_setup_per_config, last) where `last` is
    the last call's return value."""
    start = time.perf_counter()
    timed(lambda: call(quantum), backend)                       # warm-up: compile, capture
    setup, _ = timed(lambda: call(quantum), backend)
    threshold = max(min_call_s, 3 * setup)
    steps = 2 * quantum
    while True:
        t, last = timed(lambda: call(steps), backend)
        spent = time.perf_counter() - start
        if t >= threshold or spent + 2 * t > cap_s or steps >= 50_000_000:
            break
        per_step = max(t - 0.9 * setup, 0.05 * t) / steps     # the part that grows with steps
        want = (1.25 * threshold - setup) / per_step
        steps = quantum * math.ceil(min(max(want, 2 * steps), 1000 * steps) / quantum)
    best = t
    calls = 1
    while calls < 3 and time.perf_counter() - start + best < cap_s:
        t, last = timed(lambda: call(steps), backend)
        best, calls = min(best, t), calls + 1
    slope = (steps - quantum) / (best - setup) if best - setup > 0.5 * best else None
    return dict(steps=steps, calls=calls, call_s=best, setup_s=setup, slope=slope, last=last,
                short=best < threshold)             # the point's time cap stopped the growth


def config_grid(B, depth, width):
    lrs = np.geomspace(*LR_RANGE, B) if B > 1 else [LR_RANGE[1]]
    return gl.grid(depth=depth, width=width, lr=[float(x) for x in lrs], seed=0)


def run_point(X, y, B, depth, width, dt, args, cap_s, use_jax):
    m, d = X.shape
    row = dict.fromkeys(POINT_KEYS)
    row.update(B=B, depth=depth, width=width, dtype=dt, status="ok")
    cfgs = config_grid(B, depth, width)

    def gl_call(steps):
        return gl.train(X, y, cfgs, loss="l4", steps=steps, log_every=args.log_every,
                        backend=args.backend, dtype=dt)

    try:
        r = measure(gl_call, args.log_every, args.min_call, cap_s * (0.5 if use_jax else 1.0),
                    args.backend)
        row.update(steps=r["steps"], calls=r["calls"], call_s=r["call_s"], setup_s=r["setup_s"],
                   rate=B * r["steps"] / r["call_s"],
                   rate_ex_setup=None if r["slope"] is None else B * r["slope"],
                   short_call=r["short"],
                   diverged=int(np.sum(r["last"].diverged)))
        row["pct_fp32_floor"] = 100 * row["rate"] * 4 * m * d / FP32_FLOPS
        if dt == "float64":
            row["pct_fp64_peak"] = 100 * row["rate"] * 4 * m * d / FP64_FLOPS
    except Exception as exc:  # one failing point must not sink the run
        row.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:300]}")
    if not use_jax:
        row["jax_note"] = args.jax_why
        return row
    try:
        lrs = [c.lr for c in cfgs]
        peer = jax_peer.make_peer(X, y, lrs, depth, width, p=P, dtype=dt, chunk=args.log_every)
        r = measure(peer, peer.quantum, args.min_call, cap_s * 0.5)
        finite = np.isfinite(np.asarray(r["last"][0])).all(axis=(1, 2))      # (B,) per config
        row.update(jax_steps=r["steps"], jax_call_s=r["call_s"],
                   jax_rate=B * r["steps"] / r["call_s"],
                   jax_note=f"{args.jax_why}; {int(np.sum(~finite))} configs non-finite"
                            + ("; SHORT call (time cap)" if r["short"] else ""))
        if row["rate"]:
            row["ratio_vs_jax"] = row["rate"] / row["jax_rate"]
    except Exception as exc:
        row["jax_note"] = f"JAX failed: {type(exc).__name__}: {str(exc)[:300]}"
    return row


def fig3(X, y, args, clock, frac):
    """Figure 3's grid, one call per dtype; see the module docstring."""
    steps, log_every, probe = (60, 20, 20) if args.dry_run else (100_000, 1000, 2_000)
    cfgs = gl.grid(loss=["l2", "l4"], depth=[1, 2, 3], width=1, lr=list(gl.LR_GRID), seed=0)
    out = {"configs": len(cfgs), "steps": steps, "log_every": log_every, "goal_s": FIG3_GOAL_S,
           "lr_grid": list(gl.LR_GRID), "runs": []}
    for dt in ("float64", "float32"):
        run = {"dtype": dt}
        out["runs"].append(run)
        if clock.left(frac) <= 0:
            run["status"] = "skipped: budget spent"
            continue
        try:
            def call(n):
                return gl.train(X, y, cfgs, steps=n, log_every=min(log_every, n),
                                backend=args.backend, dtype=dt)
            timed(lambda: call(probe), args.backend)             # warm-up: compile, capture
            t_probe, _ = timed(lambda: call(probe), args.backend)
            estimate = t_probe * steps / probe                     # setup counted 50x: generous
            run["probe_s"], run["probe_steps"] = t_probe, probe
            if estimate > clock.left(frac):
                run.update(status="extrapolated", time_s=estimate,
                           note=f"ESTIMATE from a {probe}-step call x {steps // probe}: the full "
                                f"call would not fit the {clock.left(frac):.0f} s left")
                continue
            t, res = timed(lambda: call(steps), args.backend)
            run.update(status="ok", time_s=t, diverged=int(np.sum(res.diverged)),
                       records=int(len(res.steps)),
                       goal_met=None if args.dry_run else bool(t < FIG3_GOAL_S))
        except Exception as exc:
            run.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return out


def pool_bytes(backend):
    if backend != "cuda":
        return None
    import cupy
    return int(cupy.get_default_memory_pool().total_bytes())


def million(X, y, args, clock):
    """One call with 10^6 width-1 depth-3 float32 configs (after a 10^5 probe); see above."""
    big, small, steps = (1_000, 100, 10) if args.dry_run else (1_000_000, 100_000, 300)
    out = {"configs": big, "steps": steps, "dtype": "float32", "depth": 3, "width": 1}
    for n in (small, big):
        rec = {"configs": n}
        out[f"run_{n}"] = rec
        if clock.left() <= 0:
            rec["status"] = "skipped: budget spent"
            return out
        t0 = time.perf_counter()
        cfgs = config_grid(n, 3, 1)
        rec["grid_s"] = time.perf_counter() - t0
        if n == big:
            est = out[f"run_{small}"]["call_s"] * big / small
            if est > clock.left():
                rec.update(status="skipped", note=f"ESTIMATE {est:.0f} s (10x the {small}-config "
                           f"call) > {clock.left():.0f} s left")
                return out
        try:
            if args.backend == "cuda":
                import cupy
                cupy.get_default_memory_pool().free_all_blocks()
            base = pool_bytes(args.backend)
            t, res = timed(lambda: gl.train(X, y, cfgs, loss="l4", steps=steps, log_every=100,
                                            backend=args.backend, dtype="float32"), args.backend)
            rec.update(status="ok", call_s=t, rate=n * steps / t, diverged=int(np.sum(res.diverged)))
            if base is not None:
                rec["pool_bytes"] = pool_bytes(args.backend) - base
                rec["bytes_per_config"] = rec["pool_bytes"] / n
            else:
                rec["bytes_per_config"] = None
                rec["note"] = "numpy backend: no device memory pool to read"
        except Exception as exc:
            rec.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:300]}")
            return out
        del cfgs, res
    return out


def fmt(v, spec=",.0f"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table(data):
    """The markdown tables of a run (points, Figure 3, the million)."""
    lines = ["| B | depth | width | dtype | config-steps/s | % FP32 floor | % FP64 peak | "
             "JAX config-steps/s | gl / JAX | setup s | steps per call | steady config-steps/s |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["points"]:
        if r["status"] != "ok":
            lines.append(f"| {r['B']} | {r['depth']} | {r['width']} | {r['dtype']} | "
                         f"{r['status']}: {r.get('error') or ''} | | | | | | | |")
            continue
        lines.append(
            f"| {r['B']} | {r['depth']} | {r['width']} | {r['dtype']} | {fmt(r['rate'])}"
            f"{' (short)' if r['short_call'] else ''} | "
            f"{fmt(r['pct_fp32_floor'], '.1f')} | {fmt(r['pct_fp64_peak'], '.1f')} | "
            f"{fmt(r['jax_rate'])} | {fmt(r['ratio_vs_jax'], '.2f')} | {fmt(r['setup_s'], '.3f')} | "
            f"{fmt(r['steps'], ',d')} | {fmt(r['rate_ex_setup'])} |")
    lines += ["", "FP32 floor: 4 m d flops per config-step at 67 TFLOP/s (H200 FP32 non-tensor); "
              "float64 rows also against the ~34 TFLOP/s FP64 peak.  config-steps/s = B x steps / "
              "(best of up to 3 whole train() calls); steady = the same without the setup_s call; "
              "(short): the point's time cap stopped the calls below max(0.2 s, 3 setup_s)."]
    f3 = data.get("fig3")
    if f3:
        lines += ["", f"Figure 3 grid ({f3['configs']} configs, l2 + l4, depths 1-3, width 1, "
                  f"gl.LR_GRID) x {f3['steps']:,} steps, log_every {f3['log_every']}, one call; "
                  f"goal < {f3['goal_s']:g} s:"]
        for run in f3["runs"]:
            st = run.get("status")
            if st == "ok":
                goal = {True: "goal met", False: "goal NOT met", None: "dry run: no goal"}
                lines.append(f"- {run['dtype']}: {run['time_s']:.2f} s ({goal[run['goal_met']]}; "
                             f"{run['diverged']} of {f3['configs']} configs diverged)")
            elif st == "extrapolated":
                lines.append(f"- {run['dtype']}: ~{run['time_s']:.1f} s ({run['note']})")
            else:
                lines.append(f"- {run['dtype']}: {st} {run.get('error', '')}")
    mil = data.get("million")
    if mil:
        lines += ["", "Many configs in one call:"]
        for key in sorted(k for k in mil if k.startswith("run_")):
            rec = mil[key]
            if rec.get("status") == "ok":
                bpc = rec.get("bytes_per_config")
                lines.append(f"- {rec['configs']:,} configs (depth 3, width 1, float32) x "
                             f"{mil['steps']} steps: one call {rec['call_s']:.2f} s "
                             f"({fmt(rec['rate'])} config-steps/s, setup included; building the "
                             f"grid {rec['grid_s']:.1f} s), "
                             + (f"{bpc:,.0f} device bytes per config (pool high-water / configs)"
                                if bpc else rec.get("note", "")))
            else:
                lines.append(f"- {rec['configs']:,} configs: {rec.get('status')} "
                             f"{rec.get('note', '') or rec.get('error', '')}")
    if data.get("skipped"):
        lines += ["", "Skipped (budget): " + "; ".join(data["skipped"])]
    return "\n".join(lines)


def summary(data):
    """gpu_check.sh's short table: depth 3 width 1 rows, Figure 3 and the million."""
    keep = dict(data)
    keep["points"] = [r for r in data["points"] if r["depth"] == 3 and r["width"] == 1]
    return table(keep)


def write_json(path, data):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)                       # atomic: a kill mid-write keeps the last copy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=300, help="seconds for the whole run")
    ap.add_argument("--json", default=None, help="write the results here after every point")
    ap.add_argument("--dry-run", action="store_true", help="CPU, backend numpy, tiny sizes")
    ap.add_argument("--jax", choices=("auto", "on", "off"), default="auto",
                    help="auto: on a GPU run when JAX sees a GPU; off in --dry-run")
    ap.add_argument("--log-every", type=int, default=None, help="train()'s log_every (100)")
    ap.add_argument("--min-call", type=float, default=None, help="shortest timed call (0.2 s)")
    ap.add_argument("--point-cap", type=float, default=12.0, help="most seconds per point")
    ap.add_argument("--summary", default=None, help="print the short table of a JSON and exit")
    args = ap.parse_args(argv)
    if args.summary:
        with open(args.summary) as fh:
            print(summary(json.load(fh)))
        return 0
    args.backend = "numpy" if args.dry_run else "cuda"
    args.log_every = args.log_every or (10 if args.dry_run else 100)
    args.min_call = args.min_call or (0.01 if args.dry_run else 0.2)
    if args.dry_run:
        args.point_cap = min(args.point_cap, 0.5)
    clock = Clock(args.budget)

    info = {"available": False, "why": "dry run (CPU, backend numpy)"}
    if not args.dry_run:
        from gpulinear.cuda import device_info, format_device_info
        info = device_info()
        print(format_device_info(info), flush=True)
        if not info["available"]:
            print("bench_gpu: no CUDA device: nothing to benchmark (use --dry-run on a CPU)")
            return 2
    want_jax = args.jax == "on" or (args.jax == "auto" and not args.dry_run)
    ok, why = jax_peer.jax_status(need_gpu=not args.dry_run) if want_jax else (False, "JAX off")
    use_jax, args.jax_why = want_jax and ok, why
    print(f"bench_gpu: JAX peer: {why}", flush=True)

    X, y = gl.datasets.ethanol()
    if args.dry_run:                    # the harness, not the numbers: keep the CPU steps cheap
        X, y = X[:256], y[:256]
    m, d = X.shape
    data = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "host": platform.node(), "argv": sys.argv[1:], "dry_run": args.dry_run,
                     "device": info, "jax": why, "problem": {"m": m, "d": d, "loss": "l4",
                     "optimizer": "gd", "lr_range": LR_RANGE}, "fp32_flops": FP32_FLOPS,
                     "fp64_flops": FP64_FLOPS, "log_every": args.log_every,
                     "min_call_s": args.min_call, "budget_s": args.budget},
            "points": [], "fig3": None, "million": None, "skipped": []}
    print(f"Ethanol m={m} d={d}, l4, gd, log_every {args.log_every}; budget {args.budget:.0f} s",
          flush=True)
    for B, depth, width, dt in points(args.dry_run):
        left = clock.left(0.55)
        if left <= 0:
            data["skipped"].append(f"point B={B} depth={depth} width={width} {dt}")
            print(f"  skipped (budget): B={B} depth={depth} width={width} {dt}", flush=True)
            continue
        row = run_point(X, y, B, depth, width, dt, args, min(args.point_cap, left), use_jax)
        data["points"].append(row)
        data["meta"]["elapsed_s"] = clock.elapsed()
        write_json(args.json, data)
        print(f"  B={B} depth={depth} width={width} {dt}: {row['status']} "
              f"{fmt(row['rate'])} config-steps/s ({fmt(row['pct_fp32_floor'], '.1f')} % FP32 "
              f"floor), JAX {fmt(row['jax_rate'])}, {row['steps']} steps/call "
              f"{row['error'] or ''}", flush=True)
    data["fig3"] = fig3(X, y, args, clock, 0.75)
    write_json(args.json, data)
    data["million"] = million(X, y, args, clock)
    data["meta"]["elapsed_s"] = clock.elapsed()
    write_json(args.json, data)
    print("\n" + table(data))
    print(f"\n(bench_gpu: {clock.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
