"""The one place that launches a kernel, so that tests can stand in for the GPU.

Every launch of the CUDA step goes through a `Launcher`: `raw()` for CuPy RawKernels (the CUDA
C++ X-pass), `numba()` for Numba-CUDA kernels (the update).  `RecordingLauncher` has the same
methods, runs nothing and records what each launch was handed (name, grid, block, and for every
argument its dtype, shape and strides), so the host glue of `train(backend="cuda")` is checked on
a CPU: launches per step, and that every array has the layout its kernel expects.

Neither CuPy nor Numba is imported here.
"""
from __future__ import annotations

from typing import NamedTuple


class ArgInfo(NamedTuple):
    """What a kernel argument looked like at launch: an array's dtype/shape/strides (bytes), or a
    scalar's Python type name and value."""
    kind: str              # "array" or "scalar"
    dtype: str             # NumPy dtype name, or the scalar's type name
    shape: tuple
    strides: tuple
    value: object = None   # scalars only


def describe(arg) -> ArgInfo:
    if hasattr(arg, "shape") and hasattr(arg, "dtype") and getattr(arg, "ndim", 0) > 0:
        return ArgInfo("array", str(arg.dtype), tuple(arg.shape), tuple(arg.strides))
    if hasattr(arg, "dtype"):                           # NumPy scalar (np.int32(3), ...)
        return ArgInfo("scalar", str(arg.dtype), (), (), arg.item())
    return ArgInfo("scalar", type(arg).__name__, (), (), arg)


class Launch(NamedTuple):
    name: str
    grid: tuple
    block: tuple
    args: tuple            # (ArgInfo, ...)
    shared_mem: int


class Launcher:
    """Launches on one CUDA stream: CuPy's current stream for RawKernels, and the same stream
    wrapped once for Numba (`numba.cuda.external_stream`), so both kinds of kernel are ordered,
    and capturable into one CUDA graph."""

    runs_kernels = True      # False for stand-ins: launch helpers then skip compiling kernels

    def __init__(self, cupy_stream=None):
        self.cupy_stream = cupy_stream
        self._numba_stream = None

    def raw(self, name, kernel, grid, block, args, shared_mem=0):
        """kernel: a cupy.RawKernel; args: CuPy arrays and NumPy scalars."""
        kernel(tuple(grid), tuple(block), tuple(args), shared_mem=int(shared_mem))

    def numba(self, name, kernel, grid, block, args, shared_mem=0):
        """kernel: a numba.cuda dispatcher; args: Numba device arrays (made once, outside the
        step: converting CuPy arrays per launch costs tens of microseconds) and scalars;
        shared_mem: dynamic shared memory bytes."""
        if self._numba_stream is None and self.cupy_stream is not None:
            from numba import cuda
            self._numba_stream = cuda.external_stream(self.cupy_stream.ptr)
        stream = 0 if self._numba_stream is None else self._numba_stream
        kernel[tuple(grid), tuple(block), stream, int(shared_mem)](*args)


class RecordingLauncher:
    """A Launcher that runs nothing and records every launch (see the module docstring)."""
    runs_kernels = False

    def __init__(self):
        self.launches: list[Launch] = []

    def _record(self, name, grid, block, args, shared_mem):
        self.launches.append(Launch(name, tuple(grid), tuple(block),
                                    tuple(describe(a) for a in args), int(shared_mem)))

    def raw(self, name, kernel, grid, block, args, shared_mem=0):
        self._record(name, grid, block, args, shared_mem)

    def numba(self, name, kernel, grid, block, args, shared_mem=0):
        self._record(name, grid, block, args, shared_mem)

    def clear(self):
        self.launches.clear()
