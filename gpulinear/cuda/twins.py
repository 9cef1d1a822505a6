"""Readable float64 NumPy twins of every CUDA kernel: the test oracles, never optimized.

    kernel (kernels/*.cu, gpulinear/cuda/fused.py)     twin
    gl_lp_value_grad                                   lp_value_grad
    gl_e2e_k1                                          e2e_k1
    gl_opt_<name> + gl_count_step                      optimizer_update (gpulinear/optim.py's)
    fused._width1_steps (Numba)                        train_width1

Inputs are converted to float64 NumPy arrays; every function returns new arrays.
"""
from __future__ import annotations

import math

import numpy as np

from ..engine import record_steps

from ..backend import to_numpy


def _f64(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


def lp_value_grad(Z, Yt, p):
    """(values (B,), R (B, k, m), out (B, k, m)) for predictions Z (B, k, m), targets Yt (k, m):
    R = Z - Y, out = |R|^(p-2) R, values = sum |R|^p / (p m)."""
    Z, Yt, p = _f64(Z), _f64(Yt), float(p)
    R = Z - Yt
    out = R if p == 2 else np.abs(R) ** (p - 2) * R
    values = (np.abs(R) ** p).sum(axis=(1, 2)) / (p * Z.shape[-1])
    return values, R, out


def e2e_k1(W, G, depth, lr, weight_decay, alive):
    """Eq 12 for W, G (B, 1, d): gpulinear.e2e.end_to_end_update where alive, W where frozen."""
    from ..e2e import end_to_end_update
    W, G = _f64(W), _f64(G)
    new = end_to_end_update(W, G, depth, _f64(lr), _f64(weight_decay))
    return np.where(_f64(alive).astype(bool)[:, None, None], new, W)


def optimizer_update(name, grads, state, params, hyper, alive):
    """gpulinear.optim's `name` update on float64 copies; frozen configs keep params and state."""
    from ..optim import get_optimizer
    alive = np.asarray(to_numpy(alive), dtype=bool)
    params = [_f64(p) for p in params]
    grads = [_f64(g) for g in grads]
    state = _map(state, lambda a: _f64(a) if a.dtype.kind == "f" else np.asarray(to_numpy(a)))
    hyper = {k: _f64(v) for k, v in hyper.items()}
    new_params, new_state = get_optimizer(name).update(grads, state, params, hyper)

    def keep(new, old):
        return np.where(alive.reshape(alive.shape + (1,) * (new.ndim - 1)), new, old)
    params = [keep(n, o) for n, o in zip(new_params, params)]
    fields = [[keep(n, o) for n, o in zip(nf, of)] if isinstance(nf, list) else keep(nf, of)
              for nf, of in zip(new_state, state)]
    return params, type(state)(*fields)


def _map(state, fn):
    return type(state)(*[[fn(a) for a in f] if isinstance(f, list) else fn(f) for f in state])


def train_width1(X, Y, W1, wrest, lr, p, steps, log_every, limit=math.inf, depth=None,
                 weight_decay=None):
    """Width-1 chains, k = 1, lp loss, gd: one plain loop per config (twin of the fused kernel).

    X (m, d); Y (m,); W1 (B, d) first layers; wrest (B, L) the scalars w_2..w_N (a config of depth
    N uses the first N-1 columns; depth (B,) defaults to L+1 for all); lr, weight_decay (B,).
    Per step t = 0..steps: loss from the current weights; a config whose loss is non-finite or
    above `limit` is frozen (diverged_at = t); the loss is logged at record steps; then every
    live config takes one gd step (not after the last).  Returns a dict of float64 arrays:
    loss (B, n_rec), steps (n_rec,), diverged_at (B,), W1 (B, d), wrest (B, L).
    """
    X, Y, W1, wrest = _f64(X), _f64(Y).reshape(-1), _f64(W1).copy(), _f64(wrest).copy()
    B, L = wrest.shape
    m = X.shape[0]
    depth = np.full(B, L + 1) if depth is None else np.asarray(to_numpy(depth)).astype(int)
    lr = np.broadcast_to(_f64(lr), (B,))
    wd = np.zeros(B) if weight_decay is None else np.broadcast_to(_f64(weight_decay), (B,))
    rec = record_steps(steps, log_every)
    log = np.full((B, len(rec)), np.nan)
    diverged_at = np.full(B, -1, dtype=np.int64)
    with np.errstate(all="ignore"):
        for c in range(B):
            w1, w = W1[c], wrest[c, :depth[c] - 1]       # w is a view: updates land in wrest
            alive = True
            for t in range(steps + 1):
                s = np.prod(w)                            # w_N ... w_2 (1 for depth 1)
                r = X @ (s * w1) - Y
                loss = np.sum(np.abs(r) ** p) / (p * m)
                if alive and not (np.isfinite(loss) and loss <= limit):
                    alive, diverged_at[c] = False, t
                if t in rec:
                    log[c, np.searchsorted(rec, t)] = loss
                if t == steps or not alive:
                    continue
                G = X.T @ (np.abs(r) ** (p - 2) * r) / m  # dL/dW_e
                gw = G @ w1
                others = [np.prod(np.delete(w, j)) for j in range(len(w))]
                new_w = [w[j] - lr[c] * (others[j] * gw + wd[c] * w[j]) for j in range(len(w))]
                w1 -= lr[c] * (s * G + wd[c] * w1)
                w[:] = new_w
    return {"loss": log, "steps": rec, "diverged_at": diverged_at, "W1": W1, "wrest": wrest}
