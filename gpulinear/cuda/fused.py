"""Numba-CUDA fused multi-step kernel for width-1 chains, k = 1, lp loss, gd (STYLE.md section 7).

One thread block owns up to CFG configs; each is W_1 (d,) and scalars w_2..w_N.  The block runs
many full steps without leaving the kernel; per step, all within the block:
    s = w_N...w_2;  We = s W_1                      (shared)
    r_i = <We, x_i> - y_i, D_i = |r_i|^(p-2) r_i    (threads stride over m; D to a global (B, m)
                                                     scratch; X re-read from L2 every step)
    loss = sum |r_i|^p / (p m)                      (block tree reduction in shared memory)
    health: loss non-finite or > limit -> freeze this config only (a non-finite We always gives
            a non-finite loss); log the loss at record steps into the (B, n_rec) device buffer
    G = sum_i D_i x_i / m                           (threads own columns j, and split m in parts)
    dW_1 = s G;  dw_j = (prod_{i != j} w_i) <G, W_1>;  gd with coupled weight decay
Only cuda.syncthreads (no grid sync, no warp shuffles: the simulator has none); one dynamic
shared array, partitioned by offsets (the simulator aliases two shared arrays declared on one
line); local arrays are written before read.  The block size must be a power of two.
NumPy twin: gpulinear.cuda.twins.train_width1.  Simulator: set NUMBA_ENABLE_CUDASIM=1 before
numba is imported; the host wrapper then takes and returns NumPy arrays (one switch, `_SIM`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda

# Most configs per block: ~8 flop per byte of X beats the L2 ridge (STYLE.md section 7); an
# estimate, not measured yet.  Threads per block default to 256 on a GPU (not tuned either).
CFG = 8
SHARED_LIMIT = 48 * 1024  # bytes of dynamic shared memory a launch may use without opt-in


def _is_sim() -> bool:
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda
        from numba import config
    return bool(config.ENABLE_CUDASIM)


_SIM = _is_sim()


def _build(npt):
    """The kernel for one float type (built twice at import, never per call)."""
    # array dtype: a Numba type on the GPU path; a np.dtype instance for the simulator
    adt = np.dtype(npt) if _SIM else getattr(numba, np.dtype(npt).name)

    def kernel(X, Y, W1, wrest, depth, lr, wd, p, mode, limit, t0, t1, steps, log_every,
               cpb, alive, diverged_at, log, D):
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        B, d = W1.shape
        m = X.shape[0]
        L = wrest.shape[1]
        R = max(nt, d)                         # reduction slots per config
        c0 = cuda.blockIdx.x * cpb
        nc = min(cpb, B - c0)
        fm = npt(m)
        nrec = log.shape[1]
        sh = cuda.shared.array(0, dtype=adt)   # the one dynamic shared array, partitioned:
        o_we = cpb * d                         # [0, o_we) W_1 | We | G | w_2.. | red | scalars
        o_g = 2 * cpb * d
        o_w = 3 * cpb * d
        o_red = o_w + cpb * L
        o_sc = o_red + cpb * R                 # per config: s, alive flag, loss
        acc = cuda.local.array(CFG, dtype=adt)

        for q in range(tid, nc * d, nt):
            sh[q] = W1[c0 + q // d, q % d]
        for q in range(tid, nc * L, nt):
            sh[o_w + q] = wrest[c0 + q // L, q % L]
        if tid < nc:
            sh[o_sc + 3 * tid + 1] = npt(1) if alive[c0 + tid] else npt(0)
        cuda.syncthreads()

        t = t0
        while True:
            if t == t1 and t1 < steps:         # the next launch evaluates step t1
                break
            # s = w_N ... w_2 and We = s W_1
            if tid < nc:
                s = npt(1)
                for j in range(depth[c0 + tid] - 1):
                    s *= sh[o_w + tid * L + j]
                sh[o_sc + 3 * tid] = s
            cuda.syncthreads()
            for q in range(tid, nc * d, nt):
                sh[o_we + q] = sh[o_sc + 3 * (q // d)] * sh[q]
            cuda.syncthreads()
            # residuals, l'(r) into D, partial sums of |r|^p
            for c in range(nc):
                acc[c] = npt(0)
            for i in range(tid, m, nt):
                r0 = -Y[i]
                lp = npt(0)
                for c in range(nc):
                    r = r0
                    for j in range(d):
                        r += sh[o_we + c * d + j] * X[i, j]
                    if mode == 2:
                        D[c0 + c, i] = r
                        lp = r * r
                    elif mode == 4:
                        r2 = r * r
                        D[c0 + c, i] = r2 * r
                        lp = r2 * r2
                    else:
                        a = abs(r)
                        tp = a ** (p - npt(2))
                        D[c0 + c, i] = tp * r
                        lp = tp * (a * a)
                    acc[c] += lp
            for c in range(nc):
                sh[o_red + c * R + tid] = acc[c]
            cuda.syncthreads()
            half = nt // 2
            while half > 0:
                if tid < half:
                    for c in range(nc):
                        sh[o_red + c * R + tid] += sh[o_red + c * R + tid + half]
                cuda.syncthreads()
                half //= 2
            # health and log (thread c owns config c's scalars)
            if tid < nc:
                loss = sh[o_red + tid * R] / (p * fm)
                if sh[o_sc + 3 * tid + 1] > 0 and not (math.isfinite(loss) and loss <= limit):
                    sh[o_sc + 3 * tid + 1] = npt(0)
                    diverged_at[c0 + tid] = t
                slot = -1
                if t % log_every == 0:
                    slot = t // log_every
                elif t == steps:
                    slot = nrec - 1
                if slot >= 0:
                    log[c0 + tid, slot] = loss
            cuda.syncthreads()
            if t == steps:
                break
            # G = D X / m: column j, part of the examples; then sum the parts
            parts = nt // d if d <= nt else 1
            for q in range(tid, parts * d, nt):
                j = q % d
                for c in range(nc):
                    acc[c] = npt(0)
                for i in range(q // d, m, parts):
                    x = X[i, j]
                    for c in range(nc):
                        acc[c] += D[c0 + c, i] * x
                for c in range(nc):
                    sh[o_red + c * R + q] = acc[c]
            cuda.syncthreads()
            for q in range(tid, nc * d, nt):
                c = q // d
                j = q % d
                g = npt(0)
                for part in range(parts):
                    g += sh[o_red + c * R + part * d + j]
                sh[o_g + q] = g / fm
            cuda.syncthreads()
            # scalar layers: new w_j into red (old values still needed), then copied back
            if tid < nc and sh[o_sc + 3 * tid + 1] > 0:
                c = tid
                n_w = depth[c0 + c] - 1
                gw = npt(0)
                for j in range(d):
                    gw += sh[o_g + c * d + j] * sh[c * d + j]
                for j in range(n_w):
                    others = npt(1)
                    for i2 in range(n_w):
                        if i2 != j:
                            others *= sh[o_w + c * L + i2]
                    wj = sh[o_w + c * L + j]
                    sh[o_red + c * R + j] = wj - lr[c0 + c] * (others * gw + wd[c0 + c] * wj)
                for j in range(n_w):
                    sh[o_w + c * L + j] = sh[o_red + c * R + j]
            cuda.syncthreads()
            for q in range(tid, nc * d, nt):
                c = q // d
                if sh[o_sc + 3 * c + 1] > 0:
                    w = sh[q]
                    sh[q] = w - lr[c0 + c] * (sh[o_sc + 3 * c] * sh[o_g + q] + wd[c0 + c] * w)
            cuda.syncthreads()
            t += 1

        for q in range(tid, nc * d, nt):
            W1[c0 + q // d, q % d] = sh[q]
        for q in range(tid, nc * L, nt):
            wrest[c0 + q // L, q % L] = sh[o_w + q]
        if tid < nc:
            alive[c0 + tid] = sh[o_sc + 3 * tid + 1] > 0

    return cuda.jit(kernel)


_KERNELS = {np.dtype(np.float32): _build(np.float32), np.dtype(np.float64): _build(np.float64)}


class FusedResult(NamedTuple):
    loss: object          # (B, n_rec) loss at `steps`, in the arrays' namespace and dtype
    steps: np.ndarray     # (n_rec,) the recorded steps
    diverged_at: object   # (B,) int64, -1 for configs that never diverged
    W1: object            # (B, d) final first layers
    wrest: object         # (B, L) final scalars w_2..w_N
    alive: object         # (B,) bool


def shared_bytes(cpb, d, L, threads, itemsize) -> int:
    """Dynamic shared memory of one block: W_1, We, G (cpb d each), w_2.., reductions, scalars."""
    return itemsize * cpb * (3 * d + L + max(threads, d) + 3)


def train_width1_fused(X, Y, W1, wrest, lr, p, steps, log_every, limit=math.inf, *, depth=None,
                       weight_decay=None, threads=None, configs_per_block=None,
                       steps_per_launch=None) -> FusedResult:
    """Train B width-1 chains with gd on the lp loss, `steps` steps, inside the fused kernel.

    X (m, d); Y (m,) or (m, 1); W1 (B, d); wrest (B, L) scalars w_2..w_N (L >= 1; a config of
    depth N uses the first N-1 columns, depth (B,) defaults to L+1); lr, weight_decay: (B,) or
    scalars; limit: a loss above it freezes that config.  NumPy arrays under the simulator,
    CuPy arrays (or NumPy, copied over) on a GPU; the dtype is W1's (float32 or float64).
    threads: power of two (default 32 under the simulator, 256 on a GPU); steps_per_launch
    (default: all) splits the run into launches that each resume from the device state.
    """
    if not _SIM and not cuda.is_available():
        raise RuntimeError("train_width1_fused needs a CUDA GPU (numba-cuda sees none); for the "
                           "simulator set NUMBA_ENABLE_CUDASIM=1 before numba is imported")
    xp = np if _SIM else __import__("cupy")
    dt = np.dtype(W1.dtype)
    if dt not in _KERNELS:
        raise TypeError(f"W1 must be float32 or float64, got {dt}")
    W1 = xp.array(W1, dtype=dt, order="C")                      # copies: the inputs stay intact
    B, d = W1.shape
    wrest = xp.array(wrest, dtype=dt, order="C").reshape(B, -1)
    if wrest.shape[1] == 0:
        wrest = xp.ones((B, 1), dtype=dt)
    L = wrest.shape[1]
    X = xp.array(X, dtype=dt, order="C")
    Y = xp.array(Y, dtype=dt).reshape(-1)
    m = X.shape[0]
    if X.shape != (m, d) or Y.shape != (m,):
        raise ValueError(f"X must be (m, d) = (m, {d}) and Y (m,) or (m, 1); got {X.shape}, {Y.shape}")
    depth = xp.full(B, L + 1, dtype=np.int64) if depth is None else xp.array(depth, dtype=np.int64)
    if int(depth.min()) < 1 or int(depth.max()) > L + 1:
        raise ValueError(f"depth must be in [1, {L + 1}] (wrest has {L} columns)")
    lr = xp.array(xp.broadcast_to(xp.asarray(lr, dtype=dt), (B,)))   # a writable copy
    wd = xp.zeros(B, dtype=dt) if weight_decay is None else \
        xp.array(xp.broadcast_to(xp.asarray(weight_decay, dtype=dt), (B,)))
    threads = (32 if _SIM else 256) if threads is None else int(threads)
    if threads < 1 or threads & (threads - 1) or threads > 1024:
        raise ValueError(f"threads must be a power of two in [1, 1024], got {threads}")
    cpb = CFG if configs_per_block is None else int(configs_per_block)
    while cpb > 1 and shared_bytes(cpb, d, L, threads, dt.itemsize) > SHARED_LIMIT:
        cpb //= 2
    if not 1 <= cpb <= CFG or shared_bytes(cpb, d, L, threads, dt.itemsize) > SHARED_LIMIT:
        raise ValueError(f"d = {d} is too large for the fused kernel's shared memory "
                         f"({SHARED_LIMIT} bytes); use gl.train(backend='cuda') instead")
    if L > max(threads, d):
        raise ValueError(f"depth {L + 1} needs threads >= {L}")
    from ..engine import record_steps
    rec = record_steps(steps, log_every)
    log = xp.full((B, len(rec)), np.nan, dtype=dt)
    alive = xp.ones(B, dtype=np.bool_)
    diverged_at = xp.full(B, -1, dtype=np.int64)
    D = xp.empty((B, m), dtype=dt)
    kernel = _KERNELS[dt]
    grid = (B + cpb - 1) // cpb
    shmem = shared_bytes(cpb, d, L, threads, dt.itemsize)
    stream, wrap = (0, lambda a: a) if _SIM else _gpu_launch_context()
    args = [wrap(a) for a in (X, Y, W1, wrest, depth, lr, wd)]
    state = [wrap(a) for a in (alive, diverged_at, log, D)]
    scalars = (dt.type(p), np.int64(2 if p == 2 else 4 if p == 4 else 0), dt.type(limit))
    per = steps if steps_per_launch is None else max(1, int(steps_per_launch))
    t0 = 0
    while True:
        t1 = min(t0 + per, steps)
        kernel[grid, threads, stream, shmem](*args, *scalars, np.int64(t0), np.int64(t1),
                                             np.int64(steps), np.int64(log_every),
                                             np.int64(cpb), *state)
        if t1 == steps:
            break
        t0 = t1
    return FusedResult(log, rec, diverged_at, W1, wrest, alive)


def _gpu_launch_context():
    """Numba's view of CuPy's current stream, and a CuPy -> Numba array view without a sync."""
    import cupy
    stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    return stream, lambda a: cuda.as_cuda_array(a, sync=False)
