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

__all__ = ["XPassPlan", "plan_xpass", "padded", "launch_xpass", "xpass_twin", "TILES", "THREADS",
           "MIN_BLOCKS", "REGISTERS", "shared_bytes", "blocks_per_sm", "device_blocks_per_sm",
           "load_kernel", "choose_splits"]

# Mirrors of kernels/xpass.cu: gl_xpass_tiles<T> (TR rows, MT examples, DC columns per block;
# MINB = __launch_bounds__'s blocks per SM), GL_XPASS_THREADS and gl_xpass_smem_bytes<T>();
# tests/test_emu.py checks they agree with the source.
TILES = {"float32": (32, 32, 128), "float64": (16, 16, 128)}
MIN_BLOCKS = {"float32": 4, "float64": 4}
THREADS = 128
# Registers a thread, measured: `nvcc -arch=sm_90 --cubin -Xptxas -v` (nvcc 13.0) on
# _loader.kernel_source("xpass.cu"); tests/test_kernels_nvcc.py fails when ptxas says otherwise.
# __launch_bounds__(128, 4) caps them at 65536 / (4 * 128) = 128 (no spills).
REGISTERS = {"float32": 128, "float64": 128}

# Streaming multiprocessor limits of compute capability 9.0 (H100, H200), from NVIDIA's CUDA C
# Programming Guide (compute capabilities table) and the occupancy calculator's rules: registers
# are allocated per warp in units of 256, shared memory per block in units of 128 bytes plus 1 KB
# the driver reserves per block.
SM90 = dict(regs=65536, reg_unit=256, max_threads=2048, max_blocks=32, smem=233472,
            smem_block_max=232448, smem_unit=128, smem_reserved=1024)
# A block's Gpart write plus the update kernel's read of it cost about one tile of FMAs (32 KB
# through HBM per float32 block, ~1.3 us of one SM's share of 3.35 TB/s, against ~1 us for a
# tile's 0.5 MFLOP at one SM's 0.5 TFLOP/s): ESTIMATED, not measured; the split planner charges
# each split this many tiles.
SPLIT_COST_TILES = 1


def shared_bytes(dtype) -> int:
    """Dynamic shared memory of one gl_xpass<T> block: gl_xpass_smem_bytes<T>() of the kernel
    (two X tile buffers MT x (DC + V), the W rows TR x DC, D MT x (TR + V); V = 16 B / item)."""
    dt = np.dtype(dtype)
    TR, MT, DC = TILES[dt.name]
    V = 16 // dt.itemsize
    return (2 * MT * (DC + V) + TR * DC + MT * (TR + V)) * dt.itemsize


def blocks_per_sm(registers, smem_bytes, threads=THREADS, sm=SM90) -> int:
    """Resident blocks per SM (the CUDA occupancy calculator's rule, pure Python): the least of
    the register, shared-memory, thread and block limits.  0 when one block does not fit."""
    warps = -(-threads // 32)
    regs_per_warp = -(-registers * 32 // sm["reg_unit"]) * sm["reg_unit"]
    by_regs = sm["regs"] // (regs_per_warp * warps) if registers else sm["max_blocks"]
    smem = -(-smem_bytes // sm["smem_unit"]) * sm["smem_unit"] + sm["smem_reserved"]
    by_smem = sm["smem"] // smem if smem_bytes <= sm["smem_block_max"] else 0
    return min(by_regs, by_smem, sm["max_threads"] // (warps * 32), sm["max_blocks"])


def load_kernel(dtype):
    """gl_xpass<T> on the current device, compiled and loaded, its dynamic shared memory limit
    raised to shared_bytes(dtype) (above 48 KB the driver needs cuFuncSetAttribute once per
    function).  Once per loaded module: call it when the step is built, before any graph
    capture, so compile, load and attribute errors surface there; launches then only look it up.
    """
    import cupy
    from . import _loader
    dt = np.dtype(dtype).name
    module = _loader._module("xpass.cu", cupy.cuda.Device().id)    # memoized by the loader
    hit = _LOADED.get((id(module), dt))
    if hit is not None and hit[0] is module:
        return hit[1]
    kernel = _loader.get_kernel("xpass.cu", "gl_xpass", dt)
    kernel.max_dynamic_shared_size_bytes = shared_bytes(dt)
    _LOADED[(id(module), dt)] = (module, kernel)                    # keeps the module alive
    return kernel


_LOADED = {}


def device_blocks_per_sm(dtype) -> int:
    """Resident gl_xpass<T> blocks per SM on the current GPU, from CuPy's occupancy API (the
    driver's cuOccupancyMaxActiveBlocksPerMultiprocessor) for the compiled kernel; compiles and
    loads it.  Pass it to plan_xpass(blocks_per_sm=...) on a GPU."""
    import cupy
    kernel = load_kernel(dtype)
    return int(cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
        kernel.kernel.ptr, THREADS, shared_bytes(dtype)))


class XPassPlan(NamedTuple):
    grid: tuple            # (ceil(R / TR), S, 1)
    block: tuple           # (THREADS, 1, 1)
    splits: int            # S example splits
    m_per_split: int       # examples per split, a multiple of tile_examples (last split shorter)
    ldw: int               # row pitch of W (R, ldw), X (m, ldx), Gpart (S, R, ldg): d rounded up
    ldx: int               # to 16 bytes (the kernel moves 16-byte vectors)
    ldg: int
    tile_rows: int         # TR
    tile_examples: int     # MT
    tile_d: int            # DC (d > DC: several windows of d per tile, Z still computed once)
    R: int
    m: int
    d: int
    k: int
    dtype: str
    shared_bytes: int = 0  # dynamic shared memory per block (launch argument)
    blocks_per_sm: int = 0  # resident blocks per SM the splits were chosen for
    waves: int = 0         # ceil(blocks / (blocks_per_sm * n_sm))


def _round_up(n, q):
    return -(-n // q) * q


def choose_splits(row_tiles, ex_tiles, wave, split_cost=SPLIT_COST_TILES):
    """(S, tiles per split) minimising the estimated time waves * (tiles per split + split_cost)
    (a wave: the blocks the GPU holds at once; a block's time: its tiles plus the cost of its
    partial sums); ties go to fewer splits.  Only the last split may be short: S = ceil(ex_tiles
    / tiles per split), so no split is empty."""
    # every split count S = ceil(ex_tiles / per) with its fewest tiles per split: per up to
    # sqrt(ex_tiles) directly, larger ones as ceil(ex_tiles / S) for S up to sqrt(ex_tiles)
    root = math.isqrt(ex_tiles) + 1
    pers = set(range(1, min(ex_tiles, root) + 1))
    pers.update(-(-ex_tiles // S) for S in range(1, min(ex_tiles, root) + 1))
    best = None
    for per in sorted(pers):
        S = -(-ex_tiles // per)
        if per > 1 and -(-ex_tiles // (per - 1)) == S:
            continue                               # same S with fewer tiles per block exists
        waves = -(-row_tiles * S // wave)
        key = (waves * (per + split_cost), S)
        if best is None or key < best[0]:
            best = (key, S, per)
    return best[1], best[2]


def plan_xpass(R, m, d, k, dtype, n_sm=132, blocks_per_sm=None) -> XPassPlan:
    """Grid, splits and padded pitches of one X-pass over R rows, m examples, d inputs.

    blocks_per_sm: resident blocks per SM (device_blocks_per_sm(dtype) on a GPU); None: the
    pure-Python occupancy calculator with the measured REGISTERS and shared_bytes(dtype) (equal
    on an sm_90 GPU, as __launch_bounds__ pins the registers).  The splits are chosen by
    choose_splits so that the grid fills whole waves of blocks_per_sm * n_sm blocks.
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
    if max(R, m, ld) + max(TR, MT, DC) >= 2**31:   # the kernel indexes rows and examples in int
        raise ValueError(f"plan_xpass: R={R}, m={m}, d={d} overflow the kernel's int arguments")
    smem = shared_bytes(dt)
    if blocks_per_sm is None:
        blocks_per_sm = globals()["blocks_per_sm"](REGISTERS[dt], smem)
    if blocks_per_sm < 1:
        raise ValueError(f"plan_xpass: gl_xpass<{dt}> does not fit on an SM (blocks_per_sm = "
                         f"{blocks_per_sm})")
    row_tiles, ex_tiles = -(-R // TR), -(-m // MT)
    wave = blocks_per_sm * n_sm
    S, per = choose_splits(row_tiles, ex_tiles, wave)
    if per * (2 * -(-d // DC) - 1) >= 2**31:        # the kernel counts a block's stages in int
        raise ValueError(f"plan_xpass: m={m}, d={d} give a block more stages than an int counts")
    waves = -(-row_tiles * S // wave)
    return XPassPlan((row_tiles, S, 1), (THREADS, 1, 1), S, per * MT, ld, ld, ld,
                     TR, MT, DC, int(R), int(m), int(d), int(k), dt, smem, int(blocks_per_sm),
                     waves)


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
    # a stand-in launcher (tests on the CPU) runs no compiled kernel: nothing to compile
    kernel = load_kernel(dt) if launcher.runs_kernels else None
    i32 = np.int32
    args = (W, i32(plan.ldw), X, i32(plan.ldx), Yt, prow, Gpart, i32(plan.ldg), Lpart,
            i32(R), i32(m), i32(plan.d), i32(k), i32(plan.m_per_split),
            clock if clock is not None else np.uint64(0))      # 0: a null long long*
    launcher.raw("xpass", kernel, plan.grid, plan.block, args, shared_mem=plan.shared_bytes)


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
