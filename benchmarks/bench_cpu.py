"""CPU benchmark: gl.train(backend="numpy") against a JAX peer and a hand-batched NumPy loop.

Workload: the bundled Ethanol data (m 2565, d 128, k 1), gd, B configs of one shape (depth,
width) with lrs geomspace(1e-6, 1e-4, B) (lr 1e-4 did not diverge over 3000 steps, the step
cap, at any shape, loss or dtype here, 2026-12-01; the count is printed per point).  The default matrix is dtype {float64, float32} x B {64, 1024} x
(depth, width) {(1, 1), (3, 1), (3, 100), (8, 1), (8, 100)} x loss {l4, l2}.  At each point
the implementations run in this one process, on the same configs from the same start weights
(gl.init_weights per config, stacked):
    train      gl.train(..., backend="numpy"); for l2 also with gram=False (the data path)
    JAX        benchmarks/jax_peer.make_peer: jit(vmap(grad step)) in lax.scan, compiled first
    batched    batched_gd below: what a competent researcher writes in plain NumPy
Each is timed on whole calls (a call starts from the initial weights; train's also builds them:
its setup alone, a steps=0 call, is subtracted from its calls and printed), steps per call picked from calibration
calls so a call lasts >= --min-time seconds (between --min-steps and --max-steps), best of
--repeat (of 2 for calls >= --long-call seconds); the rate is config-steps/s = B steps / seconds.
The floor line per (dtype, B): the rate of the step's two GEMMs measured here at its shapes,
over the 4 m (d+1) flops a config-step spends in them.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cpu.py [--json out.json]
        [--only dtype=float32,B=64,loss=l4] [--repeat 3] [--min-time 0.3] [--min-steps 3]
        [--max-steps 3000] [--long-call 2] [--quick] [--no-jax] [--markdown (the default)]
The full matrix: 332 s and 345 s on this project's 2-core CPU (two runs, 2026-12-01 18:01 and
18:08 UTC; the B=1024 width-100 points take about half of it).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import sys
import time

import numpy as np

import gpulinear as gl

DTYPES = ("float64", "float32")
BS = (64, 1024)
SHAPES = ((1, 1), (3, 1), (3, 100), (8, 1), (8, 100))     # (depth, width)
LOSSES = ("l4", "l2")
P = {"l2": 2.0, "l4": 4.0}
KEYS = ("dtype", "B", "depth", "width", "loss")
# --quick (the CI test): one small shape, a few steps, nothing that needs a long call
QUICK = dict(dtypes=("float64",), Bs=(64,), shapes=((1, 1),), losses=LOSSES)
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl",
         "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


# -- the hand-batched baseline ---------------------------------------------------------------
def batched_gd(X, y, Ws, lrs, p, steps):
    """Plain gd on B deep linear nets at once; returns their losses (B,) float64 after `steps`.

    X (m, d), y (m,) or (m, k), Ws [W_1..W_N] with W_j (B, n_j, n_{j-1}) (updated in place),
    lrs (B,); loss L = (1/m) sum_i (1/p) sum_r |(W_e x_i - y_i)_r|^p with W_e = W_N..W_1.
    No gpulinear code: the chain from the output side as k-row products, one GEMM per pass over
    X for all configs, the layer gradients by the chain rule from both ends (k rows each)."""
    m = X.shape[0]
    Yt = np.ascontiguousarray(y.reshape(m, -1).T)            # (k, m)
    B, k, d = Ws[0].shape[0], Ws[-1].shape[1], X.shape[1]
    N = len(Ws)
    lr = lrs.reshape(B, 1, 1)
    for t in range(steps + 1):
        # suffix[j] = W_N .. W_{j+1} (B, k, n_j); suffix[0] = W_e
        suffix = [None] * N
        suffix[N - 1] = Ws[N - 1]
        for j in range(N - 2, -1, -1):
            suffix[j] = suffix[j + 1] @ Ws[j]
        R = (suffix[0].reshape(B * k, d) @ X.T).reshape(B, k, m) - Yt      # (B, k, m)
        if p == 2:
            D = R
            L = np.einsum("bkm,bkm->b", R, R) / (2 * m)
        elif p == 4:
            R2 = R * R
            D = R2 * R
            L = np.einsum("bkm,bkm->b", R2, R2) / (4 * m)
        else:
            A = np.abs(R) ** (p - 2)
            D = A * R
            L = np.einsum("bkm,bkm->b", A * R, R) / (p * m)
        if t == steps:
            return L.astype(np.float64)
        G = (D.reshape(B * k, m) @ X).reshape(B, k, d) / m                 # dL/dW_e
        # layer Ws[j] = W_{j+1}: dL/dW_{j+1} = (W_N..W_{j+2})^T G (W_j..W_1)^T
        #   = suffix[j+1]^T v with v = G W_1^T .. W_j^T (B, k, n_j), grown from the input side;
        # every factor is read before its own update (same step's weights)
        v = G
        for j in range(N):
            g = v if j == N - 1 else suffix[j + 1].transpose(0, 2, 1) @ v
            if j < N - 1:
                v = v @ Ws[j].transpose(0, 2, 1)
            Ws[j] -= lr * g


# -- helpers ---------------------------------------------------------------------------------
def configs(B, depth, width):
    """B gd configs of one shape, lrs geomspace(1e-6, 1e-4), one seed each."""
    lrs = np.geomspace(1e-6, 1e-4, B)
    return [gl.Config(depth=depth, width=width, lr=float(lr), optimizer="gd", seed=i)
            for i, lr in enumerate(lrs)]


def stacked_weights(cfgs, d, k):
    """[W_1..W_N], W_j (B, n_j, n_{j-1}) float64: gl.init_weights of each config, stacked."""
    per = [gl.init_weights(c, d, k) for c in cfgs]
    return [np.stack([w[j] for w in per]) for j in range(len(per[0]))]


def measure(run, repeat, min_s, min_steps, max_steps, long_s=math.inf, quantum=1, fixed_s=0.0):
    """(best seconds, steps): run(steps) timed on whole calls.  Calibration calls grow steps
    until a call lasts >= fixed_s + min_s (or max_steps), fixed_s being a call's known fixed
    cost (train's setup); the last of them is the first of `repeat`.
    A call of >= long_s is timed at most twice (the slow points would otherwise take most of
    the run's time budget; twice, as a lone call can land on another process's burst)."""
    def timed(s):
        gc.collect()
        t0 = time.perf_counter()
        run(s)
        return time.perf_counter() - t0

    def up(s):                  # a multiple of quantum (JAX: whole chunks)
        return -(-s // quantum) * quantum

    s = up(min_steps)
    t = timed(s)
    while t - fixed_s < min_s and s < max_steps:
        # the fixed cost of a call makes t/s overestimate a step: grow at least 2x per try
        s = min(up(max_steps), up(max(2 * s, 1, math.ceil(
            1.2 * s * min_s / max(t - fixed_s, 1e-6)))))
        t = timed(s)
    times = [t] + [timed(s) for _ in range((repeat if t < long_s else min(repeat, 2)) - 1)]
    return min(times), s


def gemm_rate(m, d, B, dtype, min_s=0.3):
    """GFLOP/s of the step's two GEMMs at its shapes: R = [W, -1] [X, y]^T (B, d+1) x (d+1, m)
    and G^T = [X, y]^T D^T (d+1, m) x (m, B), 4 B m (d+1) flops together (best of 3)."""
    rng = np.random.default_rng(0)
    Xa = rng.normal(size=(m, d + 1)).astype(dtype)
    XaT = np.ascontiguousarray(Xa.T)
    W, D = rng.normal(size=(B, d + 1)).astype(dtype), rng.normal(size=(B, m)).astype(dtype)
    Z, GT = np.empty((B, m), dtype), np.empty((d + 1, B), dtype)

    def both(n):
        for _ in range(n):
            np.matmul(W, Xa.T, out=Z)
            np.matmul(XaT, D.T, out=GT)

    t, n = measure(both, 3, min_s, 1, 10_000)
    return 4 * B * m * (d + 1) * n / t / 1e9


def machine_info():
    """Header facts: CPU model, cores, vector extensions, versions, BLAS and its threads."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = val.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": model, "cores": os.cpu_count(), "vector": [f for f in FLAGS if f in flags],
            "python": sys.version.split()[0], "numpy": np.__version__,
            "gpulinear": gl.__version__, "jax": None, "blas": [],
            "env": {v: os.environ.get(v) for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}
    try:
        import threadpoolctl
        for lib in threadpoolctl.threadpool_info():
            if lib.get("user_api") == "blas":
                info["blas"].append({k: lib.get(k) for k in (
                    "internal_api", "version", "architecture", "num_threads", "threading_layer",
                    "filepath")})
    except ImportError:
        info["blas"] = [{"internal_api": "unknown (threadpoolctl not installed)"}]
    return info


def header_lines(info, floors):
    out = [f"# {info['date']}: {info['cpu']}, {info['cores']} cores; vector: "
           f"{' '.join(info['vector']) or 'none seen'}",
           f"# python {info['python']}, numpy {info['numpy']}, jax {info['jax'] or 'not run (see notes)'}, "
           f"gpulinear {info['gpulinear']}"]
    for b in info["blas"]:
        out.append(f"# BLAS: {b.get('internal_api')} {b.get('version')}, kernel "
                   f"{b.get('architecture')}, {b.get('num_threads')} threads "
                   f"({b.get('threading_layer')}; {b.get('filepath')})")
    env = info["env"]
    out.append("# OPENBLAS_CORETYPE=" + str(env["OPENBLAS_CORETYPE"]) + ", OPENBLAS_L2_SIZE="
               + str(env["OPENBLAS_L2_SIZE"]))
    if any(v is not None for v in env.values()):
        out.append("# !!! NUMBERS NOT FAIR: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set; they pin "
                   "OpenBLAS to old AVX2 kernels. Run as: env -u OPENBLAS_CORETYPE -u "
                   "OPENBLAS_L2_SIZE python benchmarks/bench_cpu.py !!!")
    for f in floors:
        out.append(f"# GEMM floor {f['dtype']}, B={f['B']}: the step's two GEMMs at "
                   f"{f['gflops']:.1f} GFLOP/s -> {f['floor']:,.0f} config-steps/s "
                   f"(4 m (d+1) flops per config-step)")
    return out


def parse_only(text):
    """'dtype=float32,B=64' -> {key: set of str values}; a key given twice means either."""
    sel = {}
    for part in filter(None, (text or "").split(",")):
        key, eq, val = part.partition("=")
        if not eq or key not in KEYS:
            raise SystemExit(f"--only: {part!r} is not key=value with key in {KEYS}")
        sel.setdefault(key, set()).add(val)
    return sel


def points(quick=False, only=""):
    """The matrix as a list of dicts (dtype, B, depth, width, loss), filtered by --only."""
    grid = QUICK if quick else dict(dtypes=DTYPES, Bs=BS, shapes=SHAPES, losses=LOSSES)
    sel = parse_only(only)
    out = []
    for dtype in grid["dtypes"]:
        for B in grid["Bs"]:
            for depth, width in grid["shapes"]:
                for loss in grid["losses"]:
                    pt = dict(dtype=dtype, B=B, depth=depth, width=width, loss=loss)
                    if all(str(pt[k]) in v for k, v in sel.items()):
                        out.append(pt)
    return out


# -- one point -------------------------------------------------------------------------------
def load_jax_peer():
    """(make_peer, jax version) or (None, why): JAX is optional."""
    try:
        import jax
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from jax_peer import make_peer
        return make_peer, jax.__version__
    except Exception as exc:   # not installed, or a broken jaxlib: nan and a note, no crash
        return None, f"unavailable ({type(exc).__name__}: {exc}); JAX columns are nan"


def run_point(pt, X, y, peer, timing):
    """Measure one point; returns its row (rates in config-steps/s, nan where not run)."""
    dtype, B, depth, width, loss = (pt[k] for k in KEYS)
    m, d = X.shape
    cfgs = configs(B, depth, width)
    W0 = stacked_weights(cfgs, d, 1)                       # float64, for JAX and batched
    lrs = np.array([c.lr for c in cfgs])
    row = dict(pt, notes=[])
    seen = {}

    def train(steps, **kw):
        seen["res"] = gl.train(X, y, cfgs, loss=loss, steps=steps, log_every=max(steps, 1),
                               backend="numpy", dtype=dtype, progress=False, **kw)

    # the fixed cost of a call (init_weights per config, stacking, buffers): a steps=0 call
    row["train_setup_s"], _ = measure(train, **dict(timing, min_s=0.0, min_steps=0))
    setup = row["train_setup_s"]
    t, s = measure(train, fixed_s=setup, **timing)
    # steady rate: the call less its setup (JAX and batched are handed the weights, and JAX's
    # compile is outside its timing too); the whole-call rate stays in the JSON
    row.update(train_s=t, train_steps=s, train=B * s / max(t - setup, 1e-9),
               train_whole=B * s / t,
               diverged=int(seen["res"].diverged.sum()),
               final_loss_max=float(np.nanmax(seen["res"].loss[:, -1])))
    per_step = t / s                                       # s/step, setup included
    row["train_data"] = math.nan
    if loss == "l2":
        try:
            t2, s2 = measure(lambda st: train(st, gram=False), fixed_s=setup, **timing)
            row.update(train_data_s=t2, train_data_steps=s2,
                       train_data=B * s2 / max(t2 - setup, 1e-9))
        except TypeError as exc:
            if "gram" not in str(exc):
                raise
            row["notes"].append("gl.train has no gram= keyword")

    Xd, yd, lrd = X.astype(dtype), y.astype(dtype), lrs.astype(dtype)
    box = {}

    def batched(steps):
        Ws = [w.astype(dtype) for w in W0]                 # a fresh start per call
        box["L"] = batched_gd(Xd, yd, Ws, lrd, P[loss], steps)

    t, s = measure(batched, **timing)
    row.update(batched_s=t, batched_steps=s, batched=B * s / t,
               diverged_batched=int((~np.isfinite(box["L"])).sum()))
    per_step = min(per_step, t / s)

    row["jax"] = math.nan
    if peer is not None:
        # chunk = steps per lax.scan: 10 where a NumPy step is short (the loop's per-chunk cost
        # vanishes), 1 where it takes >= 30 ms (10 steps would overshoot the call time)
        chunk = 10 if per_step < 0.03 else 1
        run = peer(X, y, lrs, depth, width, p=P[loss], dtype=dtype, chunk=chunk, weights=W0)
        t0 = time.perf_counter()
        run(chunk)                                          # compile outside the timing
        row["jax_compile_s"] = time.perf_counter() - t0
        t, s = measure(run, quantum=chunk, **timing)
        row.update(jax_s=t, jax_steps=s, jax=B * s / t, jax_chunk=chunk)
        del run
    row["train_vs_jax"] = row["train"] / row["jax"]
    row["train_vs_batched"] = row["train"] / row["batched"]
    gc.collect()
    return row


def _finite(obj):
    """nan/inf -> None, so the JSON file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def fmt(x, ratio=False):
    if x is None or not math.isfinite(x):
        return "nan"
    return f"{x:.2f}x" if ratio else f"{x:,.0f}"


TABLE = ("| dtype | B | depth | width | loss | train cs/s | JAX cs/s | train/JAX | "
         "batched NumPy cs/s | train/batched | train data path cs/s (l2) | train setup s |",
         "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")


def table_row(r):
    return (f"| {r['dtype']} | {r['B']} | {r['depth']} | {r['width']} | {r['loss']} | "
            f"{fmt(r['train'])} | {fmt(r['jax'])} | {fmt(r['train_vs_jax'], True)} | "
            f"{fmt(r['batched'])} | {fmt(r['train_vs_batched'], True)} | "
            f"{fmt(r['train_data']) if r['loss'] == 'l2' else ''} | {r['train_setup_s']:.2f} |")


def footer_lines(rows, jax_note=None):
    """Divergence per point (and a warning for each point with any), setup share, notes."""
    out = []
    for r in rows:
        if r["diverged"] or r["diverged_batched"]:
            out.append(f"# WARNING: {r['dtype']} B={r['B']} depth {r['depth']} width {r['width']} "
                       f"{r['loss']}: {r['diverged']} configs diverged in train, "
                       f"{r['diverged_batched']} in batched NumPy (frozen configs skew the timing)")
    counts = [r["diverged"] for r in rows]
    out.append(f"# diverged configs per point (train, table order): {counts}"
               + ("" if any(counts) else " (none)"))
    heavy = [f"{r['dtype']}/B{r['B']}/{r['depth']}x{r['width']}/{r['loss']} "
             f"{100 * r['train_setup_s'] / r['train_s']:.0f}%"
             for r in rows if r["train_setup_s"] > 0.2 * r["train_s"]]
    if heavy:
        out.append("# train's setup (a steps=0 call) is >= 20% of its timed call at: "
                   + ", ".join(heavy))
    notes = sorted({n for r in rows for n in r["notes"]})
    if jax_note:
        notes.append("jax " + jax_note)
    if notes:
        out.append("# notes: " + "; ".join(notes))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="filter, e.g. dtype=float32,B=64,loss=l4 "
                    "(a key twice: either value)")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per implementation; best")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds a timed call lasts")
    ap.add_argument("--min-steps", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--long-call", type=float, default=2.0, help="a call this long (s) is "
                    "timed at most twice, not best of --repeat")
    ap.add_argument("--quick", action="store_true", help="CI: a tiny subset (unless --only), "
                    "calls of a few steps, one repeat")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX peer")
    ap.add_argument("--json", default=None, help="write all points here (after each point)")
    ap.add_argument("--markdown", action="store_true", help="markdown output (the default)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    timing = dict(repeat=args.repeat, min_s=args.min_time, min_steps=args.min_steps,
                  max_steps=args.max_steps, long_s=args.long_call)
    if args.quick:
        timing = dict(repeat=1, min_s=0.0, min_steps=2, max_steps=2, long_s=math.inf)
    pts = points(quick=args.quick and not args.only, only=args.only)
    if not pts:
        raise SystemExit(f"--only {args.only!r} selects no point")

    X, y = gl.datasets.ethanol()
    m, d = X.shape
    info = machine_info()
    peer, jax_note = ((None, "skipped (--no-jax); JAX columns are nan") if args.no_jax
                      else load_jax_peer())
    info["jax"] = jax_note if peer is not None else None     # the version, when it runs
    floors = []
    for dtype, B in sorted({(p["dtype"], p["B"]) for p in pts}, key=lambda t: (t[0], t[1])):
        rate = gemm_rate(m, d, B, dtype, min_s=0.02 if args.quick else 0.3)
        floors.append(dict(dtype=dtype, B=B, gflops=rate, floor=rate * 1e9 / (4 * m * (d + 1))))
    print("\n".join(header_lines(info, floors)))
    print(f"# Ethanol {m}x{d}, k 1, gd, lrs geomspace(1e-6, 1e-4, B); whole calls of >= "
          f"{timing['min_s']} s, best of {timing['repeat']} (of 2 if >= {timing['long_s']} s); "
          "cs/s = config-steps per second; train's rate is its call less its setup (a "
          "steps=0 call: init_weights of every config, buffers; last column), as the others "
          "start from the stacked weights and JAX compiles outside its timing")
    print("\n".join(TABLE), flush=True)

    rows = []
    for pt in pts:
        t0 = time.perf_counter()
        row = run_point(pt, X, y, peer, timing)
        row["point_s"] = time.perf_counter() - t0
        row["floor"] = next(f["floor"] for f in floors
                            if (f["dtype"], f["B"]) == (pt["dtype"], pt["B"]))
        rows.append(row)
        print(table_row(row), flush=True)
        if args.json:
            with open(args.json + ".tmp", "w") as f:
                json.dump(_finite({"meta": info, "floors": floors, "timing": timing,
                                   "points": rows, "elapsed_s": time.perf_counter() - t_start}),
                          f, indent=1)
            os.replace(args.json + ".tmp", args.json)
    print("\n".join(footer_lines(rows, None if peer is not None else jax_note)))
    print(f"# {len(rows)} points in {time.perf_counter() - t_start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
