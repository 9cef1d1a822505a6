"""The one dispatch point between NumPy and CuPy.

`array_namespace(*arrays)` returns the module that owns the arrays (numpy or cupy) without
importing CuPy unless an array already is one; `resolve_backend(name)` turns the user's
`backend=` into "numpy" or "cuda", importing CuPy only when CUDA is asked for (or "auto").
"""
from __future__ import annotations

import functools

import numpy as np

BACKENDS = ("auto", "numpy", "cuda")
DTYPES = ("float32", "float64")


def array_namespace(*arrays):
    """numpy or cupy, whichever owns the arrays (all must agree)."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy
            return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """A host copy (NumPy array) of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(available, why): whether CuPy can see a CUDA GPU here, and in words why not."""
    try:
        import cupy
    except ImportError as exc:
        return False, (f"CuPy is not installed ({exc}); install the extra for your CUDA version: "
                       "pip install 'gpulinear[cuda12]' or 'gpulinear[cuda13]'")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # driver missing, no device, runtime mismatch: CuPy says which
        return False, f"CuPy {cupy.__version__} found no usable CUDA device: {exc}"
    if n < 1:
        return False, f"CuPy {cupy.__version__} sees 0 CUDA devices"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, f"{n} device(s); device 0: {name}"


def resolve_backend(backend: str) -> str:
    """"numpy" or "cuda" for the user's backend= ("auto" picks CUDA when CuPy sees a GPU)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}; choose one of {BACKENDS}")
    if backend == "numpy":
        return "numpy"
    ok, why = cuda_status()
    if backend == "cuda" and not ok:
        raise RuntimeError(f"backend='cuda' was asked for but CUDA is unavailable: {why}. "
                           "Use backend='numpy' (or 'auto') to run on the CPU.")
    return "cuda" if ok else "numpy"


def resolve_dtype(dtype) -> np.dtype:
    """np.float32 or np.float64 for dtype= given as a string or a NumPy dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise TypeError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dt
