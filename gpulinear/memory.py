"""One memory estimate for both backends, the chunk planner, and the checks on absurd runs.

train() asks, before allocating anything: how many bytes does one configuration need
(`memory_per_config`), how many are available (`available_host_bytes` on the NumPy backend,
gpulinear.cuda.free_device_bytes on CUDA), and so how to cut the grid (`plan_chunks`).
Configurations never interact, so chunks run one after another give the results of one call.
`check_schedule` refuses steps / log_every combinations that could only end in a MemoryError
or never end.  Nothing here imports CuPy.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .optim import OPTIMIZERS

__all__ = ["memory_per_config", "plan_chunks", "ChunkPlan", "STATE_COPIES", "grid_bytes",
           "available_host_bytes", "cgroup_headroom", "n_records", "check_schedule", "MAX_STEPS", "MAX_RECORDS"]

# Optimizer state buffers per parameter: derived from the schema declared in gpulinear.optim.
STATE_COPIES = {name: len(opt.state_fields) for name, opt in OPTIMIZERS.items()}

# 10**9 steps: the NumPy backend's best rate on one small config is ~1e4 steps/s (2 cores,
# 2026-11), so that is more than a day even there, and weeks for a real grid.  A larger `steps`
# is a typo (10**12 for 10**4), not a plan.
MAX_STEPS = 10**9
# 10**7 records per config: 80 MB of float64 log per config, already more points than any plot
# can show; steps / log_every above it ends in a MemoryError, not a curve.
MAX_RECORDS = 10**7


def memory_per_config(depth, widths, k, d, m, dtype, optimizer="gd", n_records=0,
                      e2e=False) -> int:
    """Bytes one configuration needs during gl.train, on either backend (an upper estimate).

    P = parameters (sum n_j n_{j-1}; k d for e2e), S = optimizer state copies (STATE_COPIES):
      P (1 + S)       params and state
      2 P (1 + S)     the pure update's new arrays and the alive-mask select of them
      P + sum n_j d   layer gradients and prefix products P_j (n_j, d)
      2 k d + 3 k m   We and G; Z, D and the loss scratch (engine buffers)
      n_records + 1   loss log and value
    times the itemsize, plus 3 int64/bool flags.  X and Y are shared by all configs (not here).
    """
    widths = tuple(widths) if isinstance(widths, (tuple, list)) else (int(widths),) * (depth - 1)
    dims = (d, *widths, k)
    P = k * d if e2e else sum(dims[j + 1] * dims[j] for j in range(depth))
    S = STATE_COPIES[optimizer]
    prefix = 0 if e2e else sum(dims[j + 1] * d for j in range(depth))
    elems = 3 * P * (1 + S) + P + prefix + 2 * k * d + 3 * k * m + n_records + 1
    return int(elems * np.dtype(dtype).itemsize + 3 * 8)


def grid_bytes(configs, k, d, m, dtype, n_rec) -> tuple[int, int]:
    """(bytes of the largest config, bytes shared by all) of one train() call on (m, d) -> k.

    Shared: [X, Y] (m, d + k), its transpose and Y^T, in `dtype` (both backends keep these)."""
    per = max(memory_per_config(c.depth, c.widths, k, d, m, dtype, c.optimizer, n_rec,
                                e2e=c.parameterization == "e2e") for c in configs)
    return per, (2 * m * (d + k) + k * m) * np.dtype(dtype).itemsize


class ChunkPlan(NamedTuple):
    chunks: list      # [slice] covering range(n_configs) in order, each run as one train() call
    message: str      # "" when everything fits at once; else what is chunked and why


def _fmt(nbytes) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024


def plan_chunks(n_configs, bytes_per_config, free_bytes, shared_bytes=0, headroom=0.8,
                where="device") -> ChunkPlan:
    """Split n_configs into equal chunks that fit in `headroom` of `free_bytes` (minus the
    `shared_bytes` of X, Y and other per-call buffers).  Configurations never interact, so running
    chunks one after another gives the same results as one call.  Raises MemoryError with the
    numbers and the fix when not even one configuration fits.  where: "device" (GPU memory) or
    "host" (RAM, the NumPy backend), for the messages."""
    if n_configs < 1:
        raise ValueError(f"n_configs must be >= 1, got {n_configs}")
    usable = int(free_bytes * headroom) - int(shared_bytes)
    if usable < bytes_per_config:
        fix = ("free GPU memory, or use backend='numpy'" if where == "device"
               else "free memory, or run on a machine with more")
        raise MemoryError(
            f"one configuration needs ~{_fmt(bytes_per_config)} of {where} memory (plus "
            f"{_fmt(shared_bytes)} shared), but only {_fmt(free_bytes)} is available "
            f"({headroom:.0%} usable): reduce the widths, the number of examples or of recorded "
            f"steps (a larger log_every), {fix}")
    per_chunk = usable // bytes_per_config
    n_chunks = math.ceil(n_configs / per_chunk)
    size = math.ceil(n_configs / n_chunks)
    chunks = [slice(i, min(i + size, n_configs)) for i in range(0, n_configs, size)]
    message = "" if len(chunks) == 1 else (
        f"gpulinear: {n_configs} configurations need ~{_fmt(n_configs * bytes_per_config)} of "
        f"{where} memory and {_fmt(free_bytes)} is available; running them in {len(chunks)} "
        f"chunks of up to {size} configurations (results are identical, configurations never "
        "interact)")
    return ChunkPlan(chunks, message)


def available_host_bytes() -> int:
    """RAM this process can still use, as the OS limits it: the smallest of
      MemAvailable (/proc/meminfo: free memory plus the page cache the kernel can drop; else
        free pages x page size from os.sysconf),
      the headroom under RLIMIT_AS and RLIMIT_DATA (ulimit -v / -d; the limit minus this
        process's VmSize / VmData),
      the cgroup's limit minus its usage (v2 memory.max - memory.current, v1
        memory.limit_in_bytes - memory.usage_in_bytes, the tightest of the process's cgroup and
        its parents: Slurm --mem, Docker --memory, systemd MemoryMax),
    else 2**63 (unknown: never chunk)."""
    return min(_meminfo_available(), _rlimit_headroom(), cgroup_headroom())


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024          # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):   # not on this OS (macOS lacks AVPHYS)
        return 2**63


def _proc_status_bytes(field) -> int | None:
    """A "kB" line of /proc/self/status (VmSize, VmData) in bytes, or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rlimit_headroom() -> int:
    """Bytes left under RLIMIT_AS and RLIMIT_DATA (the soft limits a raise of MemoryError
    follows), 2**63 where unlimited or unknown."""
    try:
        import resource
    except ImportError:               # Windows
        return 2**63
    room = 2**63
    for limit, field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        if not hasattr(resource, limit):
            continue
        soft, _ = resource.getrlimit(getattr(resource, limit))
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _proc_status_bytes(field)
        room = min(room, max(soft - (used or 0), 0))
    return room


def _read_int(path) -> int | None:
    """An integer file of the cgroup filesystem; None for "max", a missing file or junk."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_headroom(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup") -> int:
    """The cgroup memory limit minus usage for this process (v2 and v1), the tightest over its
    cgroup and every parent up to `root`; 2**63 without a limit.  The paths are parameters so
    that the tests can give a fake cgroup tree."""
    try:
        with open(proc_cgroup) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return 2**63
    room = 2**63
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":                      # v2: "0::/path"
            base, limit_f, usage_f = Path(root), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):   # v1: "4:memory:/path"
            base, limit_f, usage_f = Path(root) / "memory", "memory.limit_in_bytes", \
                "memory.usage_in_bytes"
            if not base.is_dir():
                base = Path(root) / controllers
        else:
            continue
        folder = base / rel.lstrip("/")
        if not folder.is_dir():   # a container sees the host's path; its own cgroup is the mount
            folder = base
        while True:
            limit, usage = _read_int(folder / limit_f), _read_int(folder / usage_f)
            # v1 writes "no limit" as a huge number (2**63 rounded to pages): min() ignores it
            if limit is not None:
                room = min(room, max(limit - (usage or 0), 0))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return room


def n_records(steps: int, log_every: int) -> int:
    """len(record_steps(steps, log_every)) without building it: 0, log_every, ..., and the last."""
    return steps // log_every + 1 + (steps % log_every != 0)


def check_schedule(steps: int, log_every: int) -> int:
    """Refuse runs that could only fail or never finish; returns the number of records."""
    if steps > MAX_STEPS:
        raise ValueError(
            f"steps={steps:,} is more than {MAX_STEPS:,} (over a day for one config even at "
            "the fastest rate): this looks like a typo; give fewer steps")
    n = n_records(steps, log_every)
    if n > MAX_RECORDS:
        raise ValueError(
            f"steps={steps:,} with log_every={log_every:,} records {n:,} losses per config (more "
            f"than {MAX_RECORDS:,}, ~{_fmt(8 * n)} each): give a larger log_every, e.g. "
            f"log_every={max(1, steps // 1000):,} for 1000 points")
    return n


# Grids this large print what they will cost before anything is allocated: building and
# stacking them alone takes tens of seconds (10^6 configs: ~34 s on 2 cores, 2026-12).
BIG_GRID = 10**5


def step_flops(cfg, k, d, m) -> int:
    """Rough flops of one step of one config: the two passes over the m examples (4 m d k) and
    the chain products and layer gradients (~6 d sum n_j n_{j-1})."""
    dims = (d, *cfg.widths, k)
    chain = 0 if cfg.parameterization == "e2e" else sum(
        dims[j + 1] * dims[j] for j in range(cfg.depth))
    return 4 * m * d * k + 6 * d * chain


def host_gflops() -> float:
    """This machine's batched small-GEMM rate in GFLOP/s, measured in ~10 ms (the engine's work
    is batched small matrix products): the time estimate of a big grid divides by it."""
    import time
    a = np.ones((32, 64, 64))
    np.matmul(a, a)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.matmul(a, a)
        best = min(best, time.perf_counter() - t0)
    return 32 * 2 * 64**3 / max(best, 1e-9) / 1e9


def big_grid_message(configs, k, d, m, steps, per, shared, free, where) -> str:
    """One line on what a grid of BIG_GRID+ configs needs (memory, work, and on the host a time
    at this machine's measured GEMM rate), printed before allocating."""
    n = len(configs)
    flops = steps * sum(step_flops(c, k, d, m) for c in configs)
    line = (f"gpulinear: {n:,} configurations x {steps:,} steps: ~{_fmt(n * per + shared)} of "
            f"{where} memory ({_fmt(free)} available), ~{flops / 1e12:.3g} TFLOP")
    if where == "host":
        rate = host_gflops()
        line += (f", roughly {_clock(flops / (rate * 1e9))} at this machine's "
                 f"{rate:.0f} GFLOP/s on small batched GEMMs")
    return line + "; building the grid's arrays starts now"


def _clock(seconds) -> str:
    s = int(round(seconds))
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"
