"""gpulinear.cuda: the CUDA backend's kernels and host-side bookkeeping.

    step       CudaStep: the whole call's training step as two kernel launches, graph-replayed
    xpass      the X-pass kernel (kernels/xpass.cu) launcher and its NumPy twin
    update     the Numba-CUDA update kernel (health, log, chain, optimizers, Eq 10/12) and twin
    layout     the packed per-config layout the update kernel reads (pure NumPy)
    graph      Replay: capture a launch sequence into a CUDA graph once, replay it
    launch     Launcher (the one place that launches) and RecordingLauncher (tests)
    _loader    finds kernels/*.cu (wheel or source tree), inlines headers, one RawModule/device
Here: device_info() for `gpulinear info` and the FP32 (no TF32) matmul switch of the array step
on CuPy.  The memory estimate and chunk planner (memory_per_config, plan_chunks) live in
gpulinear.memory, shared with the NumPy backend, and are re-exported here.  Importing this
package imports neither CuPy nor Numba.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

# One memory estimate for both backends lives in gpulinear.memory; the names stay importable here.
from ..memory import STATE_COPIES, ChunkPlan, _fmt, memory_per_config, plan_chunks  # noqa: F401

__all__ = ["memory_per_config", "plan_chunks", "ChunkPlan", "free_device_bytes", "device_info",
           "format_device_info", "full_fp32_matmul", "STATE_COPIES", "fused_step_check"]

def free_device_bytes() -> int:
    """Free bytes on the current device, counting what CuPy's memory pool holds unused."""
    import cupy
    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free + cupy.get_default_memory_pool().free_bytes())


def _version(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _cuda_libraries() -> dict:
    """{name: "version (path)" or "not found: why"} for the CUDA libraries the fused step needs
    at run time: NVRTC (CuPy compiles the X-pass), libNVVM (numba-cuda compiles the update
    kernel) and nvJitLink (links that PTX when the driver is older than it).  Loads them
    through cuda-pathfinder (what numba-cuda does), needs no GPU."""
    versions = {
        "nvrtc": lambda: "{1}.{2}".format(*__import__("cuda.bindings.nvrtc", fromlist=["x"])
                                          .nvrtcVersion()),
        "nvvm": lambda: "{}.{}".format(*__import__("cuda.bindings.nvvm", fromlist=["x"])
                                       .version()),
        "nvJitLink": lambda: "{}.{}".format(*__import__("cuda.bindings.nvjitlink",
                                                        fromlist=["x"]).version()),
    }
    out = {}
    for name, version in versions.items():
        try:
            from cuda import pathfinder
            lib = pathfinder.load_nvidia_dynamic_lib(name)
        except Exception as exc:     # no cuda-pathfinder, or the library is not installed
            out[name] = f"not found ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
            continue
        try:
            ver = version()
        except Exception:
            ver = "version unknown"
        out[name] = f"{ver} ({getattr(lib, 'abs_path', None) or 'loaded'})"
    return out


def _driver_version():
    """The CUDA version the installed driver supports ("13.0"), or why it is unknown."""
    try:
        from cuda.bindings import driver
        err, v = driver.cuDriverGetVersion()
        if int(err) != 0:
            return f"unknown ({err})"
        return _cuda_version(v)
    except Exception as exc:          # no libcuda (no driver), or no cuda-bindings
        return f"no driver found ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def fused_step_check(dtype="float32") -> tuple[bool, str]:
    """(ok, what): build a tiny fused CUDA step on this GPU, which compiles and loads both
    kernels (gpulinear.cuda.step.CudaStep.load_kernels), and say whether a train() call would
    run it or fall back to the array step on CuPy, and why.  Needs a GPU; takes seconds."""
    try:
        from ..config import Config
        from ..losses import Lp
        from ..plan import record_steps
        from .step import CudaStep
        X = np.linspace(-1, 1, 24).reshape(8, 3)
        CudaStep(X, X[:, :1] * 0.5, [Config(depth=2, width=1, lr=1e-3)], Lp(4), np.dtype(dtype),
                 record_steps(2, 1), None, float("inf"))
    except Exception as exc:          # what train(fused=None) would catch and fall back on
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"
    return True, "both kernels compiled and loaded on this GPU"


def device_info(check_step=True) -> dict:
    """What `gpulinear info` prints about CUDA: the GPU and versions, the run-time compilers
    (NVRTC, libNVVM, nvJitLink) and which step a train() call would take, or exactly why not.
    check_step: compile and load the fused step's kernels to answer the last (seconds)."""
    from ..backend import cuda_status
    ok, why = cuda_status()
    info = {"available": ok, "why": why, "cupy": _version("cupy-cuda13x") or _version("cupy-cuda12x")
            or _version("cupy"), "numba_cuda": _version("numba-cuda"),
            "tf32": os.environ.get("CUPY_TF32", "0") not in ("", "0"),
            "driver": _driver_version(), "libraries": _cuda_libraries()}
    if not ok:
        info["step"] = f"numpy (CUDA unavailable: {why})"
        return info
    import cupy
    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device()
    props = rt.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    free, total = rt.memGetInfo()
    info.update(name=name, device=dev.id, compute_capability=dev.compute_capability,
                driver=_cuda_version(rt.driverGetVersion()),
                runtime=_cuda_version(rt.runtimeGetVersion()),
                total_memory=int(total), free_memory=int(free))
    if check_step:
        fused, what = fused_step_check()
        info["step"] = ("cuda-fused for lp losses (" + what + "); the array step on CuPy for "
                        "xent" if fused else f"the array step on CuPy: the fused step fails "
                        f"to load ({what})")
    return info


def format_device_info(info=None) -> str:
    info = device_info() if info is None else info
    lines = [f"CuPy: {info['cupy'] or 'not installed'}; "
             f"numba-cuda: {info['numba_cuda'] or 'not installed'}",
             f"CUDA driver: {info.get('driver', '?')}"]
    for name, what in info.get("libraries", {}).items():
        lines.append(f"{name}: {what}")
    if not info["available"]:
        lines.append(f"CUDA: unavailable: {info['why']}")
    else:
        lines += [f"GPU {info['device']}: {info['name']} "
                  f"(compute capability {info['compute_capability']})",
                  f"driver CUDA {info['driver']}, runtime CUDA {info['runtime']}",
                  f"memory: {_fmt(info['free_memory'])} free of {_fmt(info['total_memory'])}",
                  "float32 matmul: " + ("TF32 allowed (CUPY_TF32 is set)" if info["tf32"]
                                        else "full FP32")]
    if "step" in info:
        lines.append(f"a train(backend='auto') call would take: {info['step']}")
    return "\n".join(lines)


def full_fp32_matmul(allow_tf32=None):
    """Make CuPy's float32 GEMMs use plain FP32 (CUBLAS_COMPUTE_32F), not TF32.

    TF32 rounds GEMM inputs to a 10-bit mantissa (~3e-4 relative error per product, ~1e-3 on a
    loss), which swamps the differences between depths that this library exists to measure.
    CuPy picks TF32 only when CUPY_TF32=1; we pin the float32 compute type explicitly so an
    inherited CUPY_TF32 is overridden unless allow_tf32=True (or GPULINEAR_ALLOW_TF32=1) is
    asked for.  Idempotent; imports CuPy.
    """
    import cupy
    from cupy._core import _routines_linalg as rl      # CuPy >= 8: (get|set)_compute_type
    if allow_tf32 is None:
        allow_tf32 = os.environ.get("GPULINEAR_ALLOW_TF32", "0") not in ("", "0")
    want = rl.COMPUTE_TYPE_TF32 if allow_tf32 else rl.COMPUTE_TYPE_FP32
    if rl.get_compute_type(np.float32) == want:       # (this call reads CUPY_TF32 once)
        return
    if not allow_tf32 and os.environ.get("CUPY_TF32", "0") not in ("", "0"):
        warnings.warn("CUPY_TF32 is set but gpulinear uses full FP32 float32 matmuls (TF32's "
                      "~3e-4 error hides depth effects); set GPULINEAR_ALLOW_TF32=1 to allow it",
                      stacklevel=2)
    cupy._core.set_compute_type(np.float32, want)
