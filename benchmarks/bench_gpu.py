"""GPU benchmark: config-steps/s of every training path, FLOP/s against the floor, Figure-3 time.

    python benchmarks/bench_gpu.py [--budget 200] [--fig3-cap 90] [--json out.json]

Paths, on the Ethanol problem (m = 2565, d = 128), p = 4, gd:
  cuda     gl.train(backend="cuda", fused=False): cuBLAS GEMMs + the CUDA C kernels
  fused    the Numba multi-step kernel (width 1 only; what train() picks for width-1 gd grids)
  numpy    gl.train(backend="numpy") on the CPU (skipped where one step would take > 3 s)
  jax      jit(vmap) of a per-config step inside lax.scan (when jax is importable)
  torch    a per-config loop of torch autograd steps on the GPU (when torch sees CUDA; B <= 64)
for B in {1, 64, 1024, 8192}, depth 1/3/8, width 1/100, float32/float64.  A rate is measured
as B * (S2 - S1) / (t(S2) - t(S1)) so that setup and compilation cancel; each case stops
growing S once it has spent its share of --budget seconds.  FLOP/s is the 4 m d B per-step
floor (two passes over X) divided by the time.  Then the Figure-3 grid (3 depths x 10 lrs x
2 losses, width 1, 100k steps) with the fused kernel (and gl.train wired, extrapolated from a
short run).  Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # let JAX share the GPU
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gpulinear as gl  # noqa: E402

BS, DEPTHS, WIDTHS, DTYPES = (1, 64, 1024, 8192), (1, 3, 8), (1, 100), ("float32", "float64")
P = 4.0


def sync():
    import cupy
    cupy.cuda.Device().synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def rate(run, B, share, warm=False, max_s=1_000_000):
    """Config-steps/s of run(steps): the slope between two step counts, so setup and compiles
    cancel (warm=True also runs each count once untimed: JAX compiles per count).  S2 grows x4
    while the steps take less than the setup or a sixth of `share`, and `share` is not spent."""
    def t(n):
        if warm:
            run(n)
        return timed(lambda: run(n))
    s1, s2 = 1, 3
    run(s1)                                   # first-call costs (imports, caches, compiles)
    t1, t2 = t(s1), t(s2)
    spent = t1 + t2
    while s2 < max_s and spent < share and ((t2 - t1) < share / 6 or (t2 - t1) < t1):
        s2 *= 4
        t2 = t(s2)
        spent += t2
    return B * (s2 - s1) / max(t2 - t1, 1e-9)


def configs(B, depth, width, lr=1e-5):
    """B configs, the paper's near-zero init, lrs small enough that none diverges (a diverged
    config changes the cost of a step: masking, non-finite arithmetic)."""
    lrs = list(np.geomspace(1e-6, 1e-4, B)) if B > 1 else [lr]
    return [gl.Config(depth=depth, width=width, lr=float(x), seed=i) for i, x in enumerate(lrs)]


def train_runner(X, y, cfgs, dtype, backend):
    """gl.train's step loop (cuBLAS GEMMs + the CUDA C kernels on CuPy); fused=False keeps
    width-1 grids off the Numba kernel, which is measured as its own path."""
    return lambda steps: gl.train(X, y, cfgs, loss=gl.Lp(P), steps=steps, log_every=max(steps, 1),
                                  backend=backend, dtype=dtype, fused=False)


def fused_runner(X, y, cfgs, dtype):
    import cupy
    from gpulinear.cuda.fused import train_width1_fused
    from gpulinear.cuda import width1_start
    W1, wrest, depth = width1_start(cfgs, X.shape[1])
    W1, wrest = cupy.asarray(W1, dtype=dtype), cupy.asarray(wrest, dtype=dtype)
    Xd, yd = cupy.asarray(X, dtype=dtype), cupy.asarray(y, dtype=dtype)
    lr = cupy.asarray([c.lr for c in cfgs], dtype=dtype)
    return lambda steps: train_width1_fused(Xd, yd, W1, wrest, lr, P, steps, max(steps, 1),
                                            depth=depth, steps_per_launch=10_000)


def jax_runner(X, y, cfgs, dtype):
    import jax
    import jax.numpy as jnp
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    Xj, yj = jnp.asarray(X, dtype=dtype), jnp.asarray(y, dtype=dtype)
    layers = [jnp.asarray(np.stack([gl.init_weights(c, X.shape[1], 1)[j] for c in cfgs]),
                          dtype=dtype) for j in range(cfgs[0].depth)]
    lr = jnp.asarray([c.lr for c in cfgs], dtype=dtype)

    def loss(ws):
        We = ws[0]
        for W in ws[1:]:
            We = W @ We
        r = Xj @ We[0] - yj
        return jnp.mean(jnp.abs(r) ** P) / P

    def step(ws, lr_):
        g = jax.grad(loss)(ws)
        return [w - lr_ * gw for w, gw in zip(ws, g)]

    vstep = jax.vmap(step)

    @jax.jit
    def run_n(ws, n_dummy):
        def body(carry, _):
            return vstep(carry, lr), None
        out, _ = jax.lax.scan(body, ws, None, length=n_dummy.shape[0])
        return out

    def run(steps):
        out = run_n(layers, jnp.zeros(steps))      # one compile per distinct step count
        jax.block_until_ready(out)
    return run


def torch_runner(X, y, cfgs, dtype):
    import torch
    dev = "cuda"
    tdt = getattr(torch, dtype)
    Xt, yt = torch.as_tensor(X, dtype=tdt, device=dev), torch.as_tensor(y, dtype=tdt, device=dev)
    models = []
    for c in cfgs:
        ws = [torch.tensor(w, dtype=tdt, device=dev, requires_grad=True)
              for w in gl.init_weights(c, X.shape[1], 1)]
        models.append((ws, torch.optim.SGD(ws, lr=c.lr)))

    def run(steps):
        for _ in range(steps):
            for ws, opt in models:
                We = ws[0]
                for W in ws[1:]:
                    We = W @ We
                loss = ((Xt @ We[0] - yt).abs() ** P).mean() / P
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.cuda.synchronize()
    return run


def have(mod):
    try:
        __import__(mod)
        return True
    except Exception:
        return False


def bench_grid(X, y, budget):
    cases = [(B, n, w, dt) for dt in DTYPES for B in BS for n in DEPTHS for w in WIDTHS
             if not (n == 1 and w == 100)]
    share = budget / len(cases)
    deadline = time.perf_counter() + 1.5 * budget      # past it: GPU paths of this library only
    has_jax, has_torch = have("jax"), have("torch") and __import__("torch").cuda.is_available()
    m, d = X.shape
    rows = []
    for B, n, w, dt in cases:
        cfgs = configs(B, n, w)
        row = {"B": B, "depth": n, "width": w, "dtype": dt}
        late = time.perf_counter() > deadline
        paths = {"cuda": lambda: train_runner(X, y, cfgs, dt, "cuda")}
        if w == 1:
            paths["fused"] = lambda: fused_runner(X, y, cfgs, dt)
        chain = 2 * d * w * (n - 1) + 2 * w * w * max(n - 2, 0) if n > 1 else 0  # flops/config
        cpu_step = B * (4 * m * d + 6 * chain) / 2e10                # ~20 GFLOP/s on the CPU
        if not late and cpu_step < share / 8:
            paths["numpy"] = lambda: train_runner(X, y, cfgs, dt, "numpy")
        if not late and has_jax and B * w * w * n < 1e8:
            paths["jax"] = lambda: jax_runner(X, y, cfgs, dt)
        if not late and has_torch and B <= 64:
            paths["torch"] = lambda: torch_runner(X, y, cfgs, dt)
        for name, make in paths.items():
            try:
                row[name] = rate(make(), B, share / len(paths), warm=name == "jax")
            except Exception as exc:  # one failing path must not sink the report
                row[name] = None
                row[name + "_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                print(f"  {name}: {row[name + '_error']}", flush=True)
        best = max((v for k, v in row.items() if k in ("cuda", "fused", "jax", "torch")
                    and isinstance(v, float)), default=None)
        row["floor_gflops"] = None if best is None else 4 * m * d * best / 1e9
        rows.append(row)
        print(fmt_row(row), flush=True)
    return rows


def fmt_row(row):
    def f(v):
        return "-" if not isinstance(v, float) else f"{v:,.0f}"
    return (f"B={row['B']:<5} depth={row['depth']} width={row['width']:<3} {row['dtype']:<7} "
            + " ".join(f"{k}={f(row.get(k))}" for k in ("cuda", "fused", "numpy", "jax", "torch"))
            + (f"  floor {row['floor_gflops']:.1f} GFLOP/s" if row.get("floor_gflops") else ""))


def bench_fig3(X, y, cap):
    """The Figure-3 grid: fused kernel (measured, extrapolated past `cap` s) and wired gl.train."""
    import cupy
    from gpulinear.cuda import width1_start
    from gpulinear.cuda.fused import train_width1_fused
    steps = 100_000
    cfgs = gl.grid(loss=["l2", "l4"], depth=[1, 2, 3], lr=list(gl.LR_GRID), seed=0)
    out = {"configs": len(cfgs), "steps": steps}
    Xd, yd = cupy.asarray(X), cupy.asarray(y)
    groups = {}
    for c in cfgs:
        groups.setdefault(c.loss, []).append(c)

    def fused(n):
        for loss, cs in groups.items():
            W1, wrest, depth = width1_start(cs, X.shape[1])
            train_width1_fused(Xd, yd, cupy.asarray(W1), cupy.asarray(wrest), [c.lr for c in cs],
                               float(loss[1:]), n, max(1, n // 200), depth=depth,
                               steps_per_launch=10_000)
    fused(10)                                                  # compile
    t_probe = timed(lambda: fused(2_000))
    if t_probe / 2_000 * steps < cap:
        out["fused_s"] = timed(lambda: fused(steps))
        out["fused_measured"] = True
    else:
        out["fused_s"] = t_probe / 2_000 * steps
        out["fused_measured"] = False
    def run(n, fused):
        return gl.train(X, y, cfgs, steps=n, log_every=max(1, n // 200), backend="cuda",
                        fused=fused)
    run(5, False)
    t1, t2 = timed(lambda: run(10, False)), timed(lambda: run(510, False))
    out["wired_s_extrapolated"] = (t2 - t1) / 500 * steps + t1       # the cuBLAS step loop
    if out["fused_s"] < cap:                                          # train() as a user calls it
        out["train_default_s"] = timed(lambda: run(steps, None))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=200, help="seconds for the throughput grid")
    ap.add_argument("--fig3-cap", type=float, default=90, help="seconds for the Figure-3 run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from gpulinear.cuda import device_info, format_device_info, full_fp32_matmul
    info = device_info()
    print(format_device_info(info))
    if not info["available"]:
        sys.exit("no CUDA device: nothing to benchmark")
    full_fp32_matmul()
    X, y = gl.datasets.ethanol()
    print(f"\nEthanol m={X.shape[0]} d={X.shape[1]}, p={P:g}, gd; config-steps/s per path")
    t0 = time.perf_counter()
    rows = bench_grid(X, y, args.budget)
    print(f"(grid took {time.perf_counter() - t0:.0f} s)")
    fig3 = bench_fig3(X, y, args.fig3_cap)
    how = "measured" if fig3["fused_measured"] else "extrapolated from 2,000 steps"
    print(f"\nFigure-3 grid: {fig3['configs']} configs x {fig3['steps']:,} steps: fused kernel "
          f"{fig3['fused_s']:.1f} s ({how}); gl.train wired ~{fig3['wired_s_extrapolated']:.0f} s "
          "(extrapolated from 500 steps)")
    print("\nsummary (best config-steps/s per B, float64, depth 3, width 1):")
    for r in rows:
        if r["dtype"] == "float64" and r["depth"] == 3 and r["width"] == 1:
            print("  " + fmt_row(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": info, "grid": rows, "fig3": fig3}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
