"""The packed layout of the CUDA update kernel: every config of a call in flat arrays.

One launch of the update kernel (gpulinear.cuda.update) steps C configs of any depths, widths,
optimizers and parameterizations, one warp per config, so nothing may be stacked by shape.
Instead each config owns a slice of a few flat arrays, found through per-config offsets:

    theta[poff[c] : poff[c] + psize[c]]       its parameters: layer j (1-based) is the row-major
                                              (n_j, n_{j-1}) block at poff[c] + loff[c, j-1];
                                              e2e configs hold one (k, d) block, W_e itself
    state[soff[c] + s psize[c] : ... + psize[c]]  optimizer state slot s, s = 0..len(state_fields)-1
                                              (gpulinear.optim's state_fields order)
    work[woff[c] : woff[c] + wsize(c)]         scratch of the update (see `work_size`)
    hyper[c, col]                             HYPERPARAMETERS[col] of config c (0 where unused)

Shapes: C configs, NMAX = the largest depth of the call, k outputs, d inputs.
Pure NumPy: importing this module imports neither numba nor CuPy.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..optim import HYPERPARAMETERS, OPTIMIZER_NAMES, get_optimizer, hyper_arrays

__all__ = ["K_MAX", "Packed", "pack", "work_size", "unpack_params", "unpack_state",
           "end_to_end"]

# Largest k the kernel's Eq 10 handles: its k x k matrices live in float64 dynamic shared memory,
# 5 k^2 + k per warp (10.1 KiB at 16: 4 configs in a block's 48 KiB), and one lane runs the
# Jacobi sweeps, O(k^3) each.
K_MAX = 16


class Packed(NamedTuple):
    """Every config of one call, flattened for the update kernel (NumPy or device arrays)."""
    depth: np.ndarray        # (C,) int32 N (the Eq 10 depth for e2e configs)
    dims: np.ndarray         # (C, NMAX+1) int32 n_0 = d, n_1..n_{N-1}, n_N = k, then zeros
    poff: np.ndarray         # (C,) int64 offset of the config's parameters in theta
    loff: np.ndarray         # (C, NMAX) int64 offset of layer j within them (e2e: loff[c, 0] = 0)
    psize: np.ndarray        # (C,) int64 parameter count (sum n_j n_{j-1}; k d for e2e)
    theta: np.ndarray        # (sum psize,) parameters
    opt: np.ndarray          # (C,) int32 index into optim.OPTIMIZER_NAMES
    e2e: np.ndarray          # (C,) int32 1: the parameter is W_e, trained by Eq 10 / Eq 12
    hyper: np.ndarray        # (C, len(HYPERPARAMETERS)) per-config hyperparameters
    soff: np.ndarray         # (C,) int64 offset of the config's first state slot
    state: np.ndarray        # (max(1, sum slots psize),) optimizer state, zeros at the start
    count: np.ndarray        # (C,) int64 updates taken (the optimizers' t is count + 1)
    woff: np.ndarray         # (C,) int64 offset of the config's scratch in work
    work: np.ndarray         # (sum work_size,) scratch
    p: np.ndarray            # (C,) the lp loss's p
    alive: np.ndarray        # (C,) int32 1 until the config diverges
    diverged_at: np.ndarray  # (C,) int64 step of divergence, -1 none
    reached_at: np.ndarray   # (C,) int64 first step with loss <= target, -1 none
    target: np.ndarray       # (C,) loss target, NaN = none
    log: np.ndarray          # (C, n_records) losses at the record steps, NaN before


def work_size(depth, dims, k, e2e) -> int:
    """Scratch elements of one config: 2 k (n_0 + ... + n_{L-1}), L = depth (deep), 1 (e2e).

    Deep: G = q_0 (k, d); the suffix products s_j = W_N..W_{j+1} (k, n_j) for j = 0..N-1
    (s_N = I_k is never stored; s_0 is W_e); q_j = G W_1^T..W_j^T (k, n_j) for j = 1..N-1.
    e2e: G (k, d) and the new W_e (k, d) (Eq 10's k x k matrices are in shared memory).
    In both, G is at offset 0 and the new W_e at offset k d.
    """
    layers = 1 if e2e else int(depth)
    return 2 * int(k) * int(sum(int(n) for n in dims[:layers]))


def pack(configs, losses, weights, d, k, dtype, n_records, targets=None) -> Packed:
    """Pack configs (in the order of their rows: config c owns rows c k .. c k + k - 1 of W).

    weights[c]: config c's layers [W_1..W_N] (float64, (n_j, n_{j-1}), as gl.init_weights gives),
    or [W_e] (k, d) for parameterization "e2e"; losses[c]: its loss (an Lp: `.p` is read);
    targets: None or (C,) loss targets (NaN = none).  Raises ValueError naming the limit when a
    config cannot be packed.
    """
    C = len(configs)
    if not (len(losses) == len(weights) == C) or C == 0:
        raise ValueError(f"pack: need one loss and one weight list per config, got {C} configs, "
                         f"{len(losses)} losses, {len(weights)} weight lists")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"pack: dtype must be float32 or float64, got {dtype}")
    n_records = int(n_records)
    if n_records < 1:
        raise ValueError(f"pack: n_records must be >= 1, got {n_records}")
    nmax = max(cfg.depth for cfg in configs)
    depth = np.array([cfg.depth for cfg in configs], dtype=np.int32)
    dims = np.zeros((C, nmax + 1), dtype=np.int32)
    loff = np.zeros((C, nmax), dtype=np.int64)
    psize = np.zeros(C, dtype=np.int64)
    e2e = np.array([cfg.parameterization == "e2e" for cfg in configs], dtype=np.int32)
    wsize = np.zeros(C, dtype=np.int64)
    slots = np.zeros(C, dtype=np.int64)
    p = np.zeros(C, dtype=dtype)
    for c, cfg in enumerate(configs):
        shapes = cfg.layer_shapes(d, k)
        dims[c, :cfg.depth + 1] = [d] + [a for a, _ in shapes]
        want = [(k, d)] if e2e[c] else shapes
        got = [np.shape(w) for w in weights[c]]
        if got != [tuple(s) for s in want]:
            raise ValueError(f"pack: config {c} needs layers of shapes {want}, got {got}")
        if e2e[c] and k > K_MAX:
            raise ValueError(f"pack: config {c} is e2e with k = {k} outputs, above K_MAX = {K_MAX} "
                             "(the kernel's Eq 10 works on k x k matrices in shared memory); "
                             "train it with parameterization='deep' or on backend='numpy'")
        sizes = [a * b for a, b in want]
        loff[c, :len(sizes)] = np.cumsum([0] + sizes[:-1])
        psize[c] = sum(sizes)
        wsize[c] = work_size(cfg.depth, dims[c], k, e2e[c])
        slots[c] = len(get_optimizer(cfg.optimizer).state_fields)
        if getattr(losses[c], "p", None) is None:
            raise ValueError(f"pack: config {c}'s loss {losses[c]!r} is not an lp loss (the "
                             "update kernel reads partial sums of |r|^p)")
        p[c] = losses[c].p
    if np.iinfo(np.int32).max < max(int(dims.max()), k * d):
        raise ValueError(f"pack: sizes above 2^31 - 1 (k d = {k * d}) are not supported")
    hyper = np.zeros((C, len(HYPERPARAMETERS)), dtype=dtype)
    for c, cfg in enumerate(configs):
        for name, value in hyper_arrays(cfg.optimizer, [cfg.hyper()], dtype).items():
            hyper[c, HYPERPARAMETERS.index(name)] = value[0]
    target = np.full(C, np.nan, dtype=dtype)
    if targets is not None:
        target[:] = np.asarray(targets, dtype=np.float64)
    return Packed(
        depth=depth, dims=dims, poff=_offsets(psize), loff=loff, psize=psize,
        theta=np.concatenate([np.asarray(w, dtype=np.float64).ravel()
                              for ws in weights for w in ws]).astype(dtype),
        opt=np.array([OPTIMIZER_NAMES.index(cfg.optimizer) for cfg in configs], dtype=np.int32),
        e2e=e2e, hyper=hyper, soff=_offsets(slots * psize),
        # at least one element: no device array is empty, even for an all-gd call
        state=np.zeros(max(1, int((slots * psize).sum())), dtype=dtype),
        count=np.zeros(C, dtype=np.int64), woff=_offsets(wsize),
        work=np.zeros(int(wsize.sum()), dtype=dtype), p=p,
        alive=np.ones(C, dtype=np.int32), diverged_at=np.full(C, -1, dtype=np.int64),
        reached_at=np.full(C, -1, dtype=np.int64), target=target,
        log=np.full((C, n_records), np.nan, dtype=dtype))


def _offsets(sizes):
    """Exclusive prefix sums: where each of consecutive blocks of these sizes starts."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def unpack_params(packed: Packed, c: int) -> list:
    """Config c's layers [W_1..W_N] as (n_j, n_{j-1}) arrays ([W_e] (k, d) for e2e); copies."""
    theta = np.asarray(packed.theta)
    dims = packed.dims[c]
    shapes = [(int(dims[packed.depth[c]]), int(dims[0]))] if packed.e2e[c] else \
        [(int(dims[j + 1]), int(dims[j])) for j in range(packed.depth[c])]
    start = int(packed.poff[c])
    return [theta[start + packed.loff[c, j]: start + packed.loff[c, j] + a * b].reshape(a, b).copy()
            for j, (a, b) in enumerate(shapes)]


def unpack_state(packed: Packed, c: int) -> dict:
    """Config c's optimizer state: {field: [per-layer arrays shaped like unpack_params]}."""
    layers = unpack_params(packed, c)
    size = int(packed.psize[c])
    fields = get_optimizer(OPTIMIZER_NAMES[packed.opt[c]]).state_fields
    out = {}
    for s, name in enumerate(fields):
        start = int(packed.soff[c]) + s * size
        flat = np.asarray(packed.state)[start:start + size]
        out[name] = [flat[int(packed.loff[c, j]): int(packed.loff[c, j]) + w.size]
                     .reshape(w.shape).copy() for j, w in enumerate(layers)]
    return out


def end_to_end(packed: Packed) -> np.ndarray:
    """(C, k, d) float64 end-to-end matrices W_N..W_1 of the packed parameters."""
    out = []
    for c in range(len(packed.depth)):
        layers = [w.astype(np.float64) for w in unpack_params(packed, c)]
        We = layers[0]
        for W in layers[1:]:
            We = W @ We
        out.append(We)
    return np.stack(out)
