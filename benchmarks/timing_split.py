"""Where one CUDA step's time goes, without nsys: CUDA events around graphs of the X-pass alone,
the update kernel alone and the whole step (X-pass + update), K launches each.

    python benchmarks/timing_split.py [--B 60 1024 8192] [--K 64] [--reps 5] [--json out.json]

Per B (Ethanol m 2565, d 128; depth 3, width 1, l4, gd at lr 1e-6 so nothing diverges while
the same update repeats; float32): the best of `reps` timings of one replay of each graph,
divided by K, gives us per X-pass, per update and per step; step - X-pass - update is what the
graph's node boundaries cost.  Also one eager (X-pass, update) pair timed with events and a host
sync, which adds the host's launch cost (Numba launches cost tens of us).  Prints a markdown
table and writes the JSON after every point.  Needs a GPU with CuPy and numba-cuda; downloads
nothing.  Kernels compile once per process before the first point (seconds).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def graph_of(stream, launches):
    """A CUDA graph captured from launches() on stream, or (None, why)."""
    try:
        stream.begin_capture()
        try:
            launches()
        finally:
            graph = stream.end_capture()
        return graph, ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def time_graph(cp, stream, graph, reps):
    """Best of reps: ms of one graph launch, events around it."""
    best = math.inf
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(reps):
        start.record(stream)
        graph.launch(stream)
        stop.record(stream)
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop))
    return best


def point(B, K, reps):
    import cupy as cp
    import numpy as np

    import gpulinear as gl
    from gpulinear.cuda.step import CudaStep
    from gpulinear.plan import record_steps
    X, y = gl.datasets.ethanol()
    Y = np.asarray(y, np.float64).reshape(len(y), -1)
    m, d = X.shape
    depth = [1, 2, 3] * (B // 3) + [3] * (B % 3)
    cfgs = [gl.Config(depth=n, width=1, lr=1e-6, seed=i) for i, n in enumerate(depth)]
    t0 = time.perf_counter()
    step = CudaStep(X, Y, cfgs, gl.Lp(4), np.dtype("float32"), record_steps(10**7, 10**7),
                    None, math.inf)
    build_s = time.perf_counter() - t0
    stream = step.replay.stream
    out = dict(B=B, K=K, m=m, d=d, build_s=round(build_s, 2), xpass_grid=step.plan.grid,
               splits=step.plan.splits)
    with stream:
        for _ in range(3):                             # warm-up: module loads, caches
            step._xpass()
            step._update(True)
        stream.synchronize()
        start, mid, stop = cp.cuda.Event(), cp.cuda.Event(), cp.cuda.Event()
        eager = math.inf, math.inf
        for _ in range(reps):                          # eager, host launch cost included
            start.record(stream)
            step._xpass()
            mid.record(stream)
            step._update(True)
            stop.record(stream)
            stop.synchronize()
            eager = min(eager[0], cp.cuda.get_elapsed_time(start, mid)), \
                min(eager[1], cp.cuda.get_elapsed_time(mid, stop))
        out["eager_xpass_us"], out["eager_update_us"] = (round(1e3 * e, 2) for e in eager)
        pieces = {"xpass": lambda: [step._xpass() for _ in range(K)],
                  "update": lambda: [step._update(True) for _ in range(K)],
                  "step": lambda: [(step._xpass(), step._update(True)) for _ in range(K)]}
        for name, launches in pieces.items():
            graph, why = graph_of(stream, launches)
            if graph is None:
                out[f"{name}_us"], out[f"{name}_why"] = None, why
                continue
            graph.launch(stream)                       # warm the graph
            stream.synchronize()
            out[f"{name}_us"] = round(1e3 * time_graph(cp, stream, graph, reps) / K, 2)
    if out.get("step_us"):
        s = out["step_us"] * 1e-6
        out["config_steps_per_s"] = round(B / s)
        out["pct_fp32_floor"] = round(100 * B * 4 * m * d / s / 67e12, 1)
        if out.get("xpass_us") and out.get("update_us"):
            out["node_gaps_us"] = round(out["step_us"] - out["xpass_us"] - out["update_us"], 2)
    alive = int(step.host_packed().alive.sum())
    out["alive_after"] = alive                         # lr 1e-6: all of them
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--B", type=int, nargs="+", default=[60, 1024, 8192])
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    print("| B | X-pass us | update us | step us (graph) | node gaps us | eager X-pass / update us "
          "| config-steps/s | % FP32 floor (67 TFLOP/s) | build s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for B in args.B:
        try:
            r = point(B, args.K, args.reps)
        except Exception as exc:                       # say why, go on with the next B
            r = dict(B=B, error=f"{type(exc).__name__}: {str(exc)[:500]}")
            print(f"| {B} | error: {r['error']} |", flush=True)
        else:
            print(f"| {B} | {r.get('xpass_us')} | {r.get('update_us')} | {r.get('step_us')} | "
                  f"{r.get('node_gaps_us')} | {r['eager_xpass_us']} / {r['eager_update_us']} | "
                  f"{r.get('config_steps_per_s', 0):,} | {r.get('pct_fp32_floor')} | "
                  f"{r['build_s']} |", flush=True)
            for key in ("xpass_why", "update_why", "step_why"):
                if r.get(key):
                    print(f"  {key}: {r[key]}", flush=True)
        rows.append(r)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
