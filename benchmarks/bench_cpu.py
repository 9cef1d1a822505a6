"""CPU benchmark of train(backend="numpy") against a per-config NumPy loop and JAX jit(vmap)+scan.

Workload (issue: core engine): 64 configs on the bundled Ethanol data (2565 x 128), depths 1-3,
width 1, l4 loss, gd, float64.  All three run the same configs for the same number of steps in
this one process, and report config-steps per second, the ratio to train(), and peak memory.
The floor is counted, not assumed: one step costs ~4 m d flops per config (two passes over X),
divided into the float64 GEMM rate measured here on a GEMM of the step's own shape.

    python benchmarks/bench_cpu.py [--steps 300] [--repeat 3] [--markdown]
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import time
import tracemalloc

import numpy as np

import gpulinear as gl


def configs():
    lrs = list(np.geomspace(1e-5, 1e-3, 22))
    return [gl.Config(depth=1 + i % 3, lr=float(lrs[i % 22]), seed=i // 22) for i in range(64)]


def run_train(X, y, cfgs, steps):
    return gl.train(X, y, cfgs, loss="l4", steps=steps, log_every=steps, backend="numpy",
                    progress=False)


def run_loop(X, y, cfgs, steps):
    """The baseline a researcher writes first: one config at a time, plain NumPy matrices."""
    m = X.shape[0]
    Y = y[:, None]
    for cfg in cfgs:
        Ws = gl.init_weights(cfg, X.shape[1], 1)
        for _ in range(steps):
            prefixes = [Ws[0]]
            for W in Ws[1:]:
                prefixes.append(W @ prefixes[-1])
            R = X @ prefixes[-1].T - Y                    # (m, 1)
            G = (R * R * R).T @ X / m                     # (1, d)
            grads, A = [], G
            for j in range(len(Ws) - 1, -1, -1):
                grads.append(A if j == 0 else A @ prefixes[j - 1].T)
                A = Ws[j].T @ A
            Ws = [W - cfg.lr * g for W, g in zip(Ws, grads[::-1])]


def run_jax(X, y, cfgs, steps):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    m = X.shape[0]
    out = []
    for depth in (1, 2, 3):     # vmap needs one shape per call: one jit per depth
        group = [c for c in cfgs if c.depth == depth]
        params = [jnp.asarray(np.stack([gl.init_weights(c, X.shape[1], 1)[j] for c in group]))
                  for j in range(depth)]
        lr = jnp.asarray([c.lr for c in group])

        def loss(ws):
            we = ws[0]
            for W in ws[1:]:
                we = W @ we
            r = Xj @ we[0] - yj
            return jnp.sum(r ** 4) / (4 * m)

        def step(ws, _, lr_b):
            grads = jax.grad(loss)(ws)
            return [w - lr_b * g for w, g in zip(ws, grads)], None

        def run_one(ws, lr_b):
            ws, _ = jax.lax.scan(lambda c, x: step(c, x, lr_b), ws, None, length=steps)
            return loss(ws)

        fn = jax.jit(jax.vmap(run_one))
        out.append((fn, params, lr))
    return out


def timeit(fn, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_mib(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def gemm_rate(X, B):
    """float64 GFLOP/s of the step's two GEMMs as train() calls them: R = [W, -1] [X, y]^T
    (B, d+1) x (d+1, m) and G^T = [X, y]^T D^T (d+1, m) x (m, B)."""
    rng = np.random.default_rng(0)
    m, d = X.shape
    Xa = rng.normal(size=(m, d + 1))
    XaT = np.ascontiguousarray(Xa.T)
    W, D = rng.normal(size=(B, d + 1)), rng.normal(size=(B, m))
    Z, GT = np.empty((B, m)), np.empty((d + 1, B))

    def both():
        for _ in range(20):
            np.matmul(W, Xa.T, out=Z)
            np.matmul(XaT, D.T, out=GT)

    t = timeit(both, 3) / 20
    return 4 * B * m * (d + 1) / t / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--loop-steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    X, y = gl.datasets.ethanol()
    cfgs = configs()
    n, m, d = len(cfgs), X.shape[0], X.shape[1]
    rows = []
    rate = gemm_rate(X, n)
    floor = rate * 1e9 / (4 * m * d)
    t_train = timeit(lambda: run_train(X, y, cfgs, args.steps), args.repeat)
    mem_train = peak_mib(lambda: run_train(X, y, cfgs, 20))
    cs_train = n * args.steps / t_train
    rows.append(("gpulinear train(backend='numpy')", cs_train, 1.0, mem_train))
    t_loop = timeit(lambda: run_loop(X, y, cfgs, args.loop_steps), 1)
    mem_loop = peak_mib(lambda: run_loop(X, y, cfgs[:3], 5))
    cs_loop = n * args.loop_steps / t_loop
    rows.append(("per-config NumPy loop", cs_loop, cs_train / cs_loop, mem_loop))
    try:
        jitted = run_jax(X, y, cfgs, args.steps)
        for fn, params, lr in jitted:      # compile outside the timing
            fn(params, lr).block_until_ready()

        def all_jax():
            for fn, params, lr in jitted:
                fn(params, lr).block_until_ready()

        t_jax = timeit(all_jax, args.repeat)
        cs_jax = n * args.steps / t_jax
        import jax
        rows.append((f"JAX {jax.__version__} jit(vmap)+lax.scan (per depth)", cs_jax,
                     cs_train / cs_jax, float("nan")))
    except ImportError:
        rows.append(("JAX jit(vmap)+lax.scan: jax not installed", float("nan"), float("nan"),
                     float("nan")))
    print(f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}")
    print(f"# 64 configs (depths 1-3, width 1), Ethanol {m}x{d}, l4, gd, float64, "
          f"{args.steps} steps (loop: {args.loop_steps})")
    print(f"# measured float64 GEMM rate at the step's shapes: {rate:.1f} GFLOP/s -> floor "
          f"{floor:,.0f} config-steps/s (4 m d flops per config-step)")
    print("| implementation | config-steps/s | train() speed-up over it | peak traced MiB |")
    print("|---|---:|---:|---:|")
    for name, cs, ratio, mem in rows:
        print(f"| {name} | {cs:,.0f} | {ratio:.2f}x | {mem:.1f} |")
    print(f"| (floor from measured GEMM rate) | {floor:,.0f} | train() at "
          f"{100 * cs_train / floor:.0f}% of floor | |")


if __name__ == "__main__":
    main()
