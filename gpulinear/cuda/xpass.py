"""The lp X-pass (kernels/xpass.cu): split planner, launcher and float64 NumPy twin, side by side.

R = C*k independent rows w_i (d,) (row i: config i // k, output o = i % k), X (m, d), Yt (k, m),
p per row.  With r_ij = <w_i, x_j> - Yt[o, j] and the examples cut into S contiguous splits of
m_per_split (the last may be shorter):
    Lpart[s, i]    = sum_{j in split s} |r_ij|^p                  (S, R)      not / p, not / m
    Gpart[s, i, :] = sum_{j in split s} |r_ij|^(p-2) r_ij x_j     (S, R, d)   not / m
The update kernel sums the S partials.  Nothing here imports CuPy or Numba.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..backend import array_namespace
from ..losses import lp_terms

__all__ = ["XPassPlan", "plan_xpass", "padded", "launch_xpass", "xpass_twin", "TILES", "THREADS"]

# Mirrors of kernels/xpass.cu's gl_xpass_tiles<T> (TR rows, MT examples, DC columns per block)
# and GL_XPASS_THREADS; tests/test_emu.py checks they agree with the source.
TILES = {"float32": (32, 32, 128), "float64": (16, 16, 128)}
THREADS = 128
# Blocks per SM the planner aims for when rows alone do not fill the GPU: two resident blocks
# hide one block's tile loads behind the other's FMAs (estimated, not measured).
BLOCKS_PER_SM = 2


class XPassPlan(NamedTuple):
    grid: tuple            # (ceil(R / TR), S, ceil(d / DC))
    block: tuple           # (THREADS, 1, 1)
    splits: int            # S example splits
    m_per_split: int       # examples per split, a multiple of tile_examples (last split shorter)
    ldw: int               # row pitch of W (R, ldw), X (m, ldx), Gpart (S, R, ldg): d rounded up
    ldx: int               # to 16 bytes (the kernel moves 16-byte vectors)
    ldg: int
    tile_rows: int         # TR
    tile_examples: int     # MT
    tile_d: int            # DC
    R: int
    m: int
    d: int
    k: int
    dtype: str


def _round_up(n, q):
    return -(-n // q) * q


def plan_xpass(R, m, d, k, dtype, n_sm=132) -> XPassPlan:
    """Grid, splits and padded pitches of one X-pass over R rows, m examples, d inputs.

    S = 1 when the row tiles (times the d-windows) alone give >= BLOCKS_PER_SM blocks per SM;
    otherwise enough splits to reach that (a few more, as splits hold whole example tiles), but
    never more splits than example tiles.
    """
    for name, v in (("R", R), ("m", m), ("d", d), ("k", k), ("n_sm", n_sm)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"plan_xpass: {name} must be an int >= 1, got {v!r}")
    if R % k:
        raise ValueError(f"plan_xpass: R = {R} rows is not a whole number of configs of k = {k}")
    dt = np.dtype(dtype).name
    if dt not in TILES:
        raise TypeError(f"plan_xpass: dtype must be float32 or float64, got {dt}")
    TR, MT, DC = TILES[dt]
    ld = _round_up(d, 16 // np.dtype(dt).itemsize)
    if max(R, m, ld) + max(TR, MT) >= 2**31:      # the kernel indexes rows and examples in int
        raise ValueError(f"plan_xpass: R={R}, m={m}, d={d} overflow the kernel's int arguments")
    row_tiles, windows, ex_tiles = -(-R // TR), -(-d // DC), -(-m // MT)
    target = BLOCKS_PER_SM * n_sm
    S = 1 if row_tiles * windows >= target else min(ex_tiles, -(-target // (row_tiles * windows)))
    # whole tiles, so only the last split is short; one tile less where rounding up lost splits
    m_per_split = _round_up(-(-m // S), MT)
    if -(-m // m_per_split) < S and m_per_split > MT:
        m_per_split -= MT
    S = -(-m // m_per_split)                       # no empty split, S <= example tiles
    return XPassPlan((row_tiles, S, windows), (THREADS, 1, 1), S, m_per_split, ld, ld, ld,
                     TR, MT, DC, int(R), int(m), int(d), int(k), dt)


def padded(a, ld):
    """A zero-padded C-contiguous (rows, ld) copy of a (rows, cols <= ld) array, same namespace
    and dtype (NumPy or CuPy).  Allocates: call it when the run is set up, not per step."""
    xp = array_namespace(a)
    if a.ndim != 2 or a.shape[1] > ld:
        raise ValueError(f"padded: need a 2-D array with at most {ld} columns, got {a.shape}")
    out = xp.zeros((a.shape[0], ld), dtype=a.dtype)
    out[:, :a.shape[1]] = a
    return out


def _pointer(a):
    iface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return iface["data"][0]


def _check(name, a, shape, dtype):
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):
        raise ValueError(f"launch_xpass: {name} must be an array, got {type(a).__name__}")
    if str(a.dtype) != dtype:
        raise ValueError(f"launch_xpass: {name} has dtype {a.dtype}, the plan is for {dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"launch_xpass: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"launch_xpass: {name} must be C-contiguous (the kernel uses its own "
                         "row pitch); pass a contiguous copy made once, outside the step")
    if _pointer(a) % 16:
        raise ValueError(f"launch_xpass: {name} must start on a 16-byte boundary (the kernel "
                         "moves 16-byte vectors); a fresh allocation is aligned, a slice may not be")


def launch_xpass(launcher, plan, W, X, Yt, prow, Gpart, Lpart, clock=None):
    """One gl_xpass launch through `launcher.raw` (gpulinear.cuda.launch); allocates nothing.

    W (R, ldw) and X (m, ldx) zero-padded (see padded()), Yt (k, m), prow (R,) p per row,
    Gpart (S, R, ldg) and Lpart (S, R) outputs, all of plan.dtype, C-contiguous; clock: None or
    a (1,) int64 device counter that the kernel increments by one.
    """
    dt = plan.dtype
    R, m, k, S = plan.R, plan.m, plan.k, plan.splits
    for name, a, shape in (("W", W, (R, plan.ldw)), ("X", X, (m, plan.ldx)), ("Yt", Yt, (k, m)),
                           ("prow", prow, (R,)), ("Gpart", Gpart, (S, R, plan.ldg)),
                           ("Lpart", Lpart, (S, R))):
        _check(name, a, shape, dt)
    if clock is not None:
        _check("clock", clock, (1,), "int64")
    from . import _loader
    # a stand-in launcher (tests on the CPU) runs no compiled kernel: nothing to compile
    kernel = _loader.get_kernel("xpass.cu", "gl_xpass", dt) if launcher.runs_kernels else None
    i32 = np.int32
    args = (W, i32(plan.ldw), X, i32(plan.ldx), Yt, prow, Gpart, i32(plan.ldg), Lpart,
            i32(R), i32(m), i32(plan.d), i32(k), i32(plan.m_per_split),
            clock if clock is not None else np.uint64(0))      # 0: a null long long*
    launcher.raw("xpass", kernel, plan.grid, plan.block, args)


def xpass_twin(W, X, Yt, prow, S, m_per_split, d, k):
    """(Gpart (S, R, d), Lpart (S, R)) in float64, what gl_xpass computes.

    W (R, >= d) and X (m, >= d) (padding columns ignored), Yt (k, m), prow (R,).
    """
    W = np.asarray(W, dtype=np.float64)[:, :d]
    X = np.asarray(X, dtype=np.float64)[:, :d]
    Yt = np.asarray(Yt, dtype=np.float64)
    p = np.asarray(prow, dtype=np.float64)[:, None]
    R, m = W.shape[0], X.shape[0]
    Y_rows = Yt[np.arange(R) % k]                        # (R, m): targets of each row
    Gpart, Lpart = np.zeros((S, R, d)), np.zeros((S, R))
    for s in range(S):
        j = slice(s * m_per_split, min(m, (s + 1) * m_per_split))
        Rs = W @ X[j].T - Y_rows[:, j]                   # residuals (R, examples of split s)
        value, dl, _ = lp_terms(Rs, p)                   # |r|^p, |r|^(p-2) r
        Lpart[s] = value.sum(axis=1)
        Gpart[s] = dl @ X[j]
    return Gpart, Lpart


def flops(plan) -> int:
    """Useful flops of one launch (4 R m d: two passes over X), for rates and the roofline."""
    return 4 * plan.R * plan.m * plan.d


def blocks(plan) -> int:
    return math.prod(plan.grid)
