"""Shared by tests/test_update_twin.py and tests/test_update_sim.py: a NumPy stand-in for the
X-pass kernel, the step loop of the two-launch CUDA step, and a mixed grid to train.

Not a test module (no test_ prefix); pytest puts tests/ on sys.path, so `import update_problems`.
"""
import math

import numpy as np

import gpulinear as gl
from gpulinear.cuda import layout
from gpulinear.cuda.xpass import xpass_twin
from gpulinear.plan import record_steps
from gpulinear.losses import config_loss


def xpass(W, X, Y, p_rows, S, ldg):
    """The X-pass contract in float64 (gpulinear.cuda.xpass.xpass_twin): W (R, ldw) rows of W_e,
    X (m, d), Y (m, k), p_rows (R,); returns Gpart (S, R, ldg) (columns d.. are junk, as a padded
    kernel may leave them) and Lpart (S, R), the sums over S contiguous splits of the examples."""
    m, d = X.shape
    with np.errstate(over="ignore", invalid="ignore"):
        G, Lpart = xpass_twin(W, X, Y.T, p_rows, S, -(-m // S), d, Y.shape[1])
    Gpart = np.full((S, W.shape[0], ldg), 7.0)
    Gpart[:, :, :d] = G
    return Gpart, Lpart


def start(configs, losses, d, k, dtype, n_records, targets=None):
    """Packed configs from gl.init_weights (e2e: the product), and W (R, d + 3) holding the
    initial W_e in its first d columns (3 junk columns: the kernel must use ldw, not d)."""
    weights = [gl.plan.start_weights(cfg, d, k) for cfg in configs]   # what CudaStep packs
    packed = layout.pack(configs, losses, weights, d, k, dtype, n_records, targets)
    W = np.full((len(configs) * k, d + 3), -5.0)
    W[:, :d] = layout.end_to_end(packed).reshape(-1, d)
    return packed, W.astype(dtype)


def run(update, X, Y, configs, loss, steps, log_every, dtype=np.float64, S=2, limit=math.inf,
        targets=None):
    """Train like gl.train through the two-launch step: per step, the X-pass stand-in (which also
    advances the clock) then update(packed, Gpart, Lpart, W, clock, S, m, k, d, steps,
    log_every, limit) -> (packed, W).  Returns the final (packed, W)."""
    m, d = X.shape
    k = Y.shape[1]
    losses = [config_loss(c, loss) for c in configs]
    n_rec = len(record_steps(steps, log_every))
    packed, W = start(configs, losses, d, k, dtype, n_rec, targets)
    p_rows = np.repeat([lo.p for lo in losses], k).astype(np.float64)
    clock = np.array([-1], dtype=np.int64)
    for _ in range(steps + 1):
        Gpart, Lpart = xpass(W, X, Y, p_rows, S, d + 1)
        clock[0] += 1
        packed, W = update(packed, Gpart.astype(dtype), Lpart.astype(dtype), W, clock, S, m, k,
                           d, steps, log_every, limit)
    return packed, W


def mixed_grid(k):
    """Depths 1, 2, 3, 8; widths 1, 7 and a tuple; every optimizer; deep and e2e; l2 and l4;
    one diverging lr.  Learning rates keep the others stable for ~30 steps."""
    c = gl.Config
    cfgs = [
        c(depth=1, lr=0.05, optimizer="gd", init="normal", init_scale=0.3, seed=1),
        c(depth=2, width=7, lr=0.02, optimizer="momentum", init="normal", init_scale=0.3, seed=2,
          weight_decay=0.01),
        c(depth=3, width=(4, 6), lr=0.02, optimizer="nesterov", init="identity", seed=3),
        c(depth=8, width=1, lr=0.01, optimizer="adagrad", init="identity", seed=4, lr_decay=0.1),
        c(depth=3, width=7, lr=0.5, optimizer="adadelta", init="normal", init_scale=0.3, seed=5,
          loss="l4"),
        c(depth=2, width=1, lr=0.01, optimizer="adam", init="identity", seed=6,
          weight_decay=0.001),
        c(depth=3, width=7, lr=0.003, optimizer="rmsprop", init="normal", init_scale=0.3, seed=7,
          momentum=0.5, centered=True),
        c(depth=2, width=7, lr=0.003, optimizer="rmsprop", init="normal", init_scale=0.3, seed=8),
        c(depth=8, width=7, lr=0.02, optimizer="gd", init="identity", seed=9),
        c(depth=2, width=7, lr=3.0, optimizer="gd", init="identity", seed=10),     # diverges
        c(depth=1, lr=0.05, optimizer="gd", parameterization="e2e", init="normal",
          init_scale=0.3, seed=11, weight_decay=0.01),
        c(depth=3, width=7, lr=0.03, optimizer="gd", parameterization="e2e", init="identity",
          seed=12),
        c(depth=8, width=(7, 6, 5, 7, 6, 5, 7), lr=0.02, optimizer="gd", parameterization="e2e",
          init="identity", seed=13, loss="l4"),
    ]
    if k > 1:   # rank-deficient W_e (width 1 < k): Eq 10's zero singular values
        cfgs.append(c(depth=2, width=1, lr=0.03, optimizer="gd", parameterization="e2e",
                      init="identity", seed=14))
    return cfgs


def data(m, d, k, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d)) / math.sqrt(d)
    Y = X @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(m, k))
    return X, Y
