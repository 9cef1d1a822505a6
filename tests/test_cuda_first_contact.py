"""Safe first contact (issue 17, item 1): CudaStep compiles and loads both kernels when it is
built, so what would fail at step 1 on a user's GPU fails at the build and train() falls back
(fused=None: the array step, the reason in Result.meta and one line on stderr) or raises
(fused=True).  No GPU here: each failure is simulated on the CPU as close to the real one as
this machine allows:
  - a broken kernel source: a stand-in for CuPy's RawModule compiles the loader's source with
    the real NVRTC (cuda-bindings, in a child process) and raises a CompileException with
    NVRTC's log, as CuPy does;
  - a missing libNVVM: numba-cuda's own NVVM handle is set to None, as when cuda-bindings finds
    no libnvvm, and the real Numba compile of the update kernel runs into it (NvvmSupportError);
  - a PTX-version refusal: the driver's CUDA_ERROR_UNSUPPORTED_PTX_VERSION (222) raised at the
    module load (Numba's CudaAPIError) or by nvJitLink (Numba's LinkerError);
  - a launch the GPU refuses (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES) at the build's trial launch.
"""
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import engine
from gpulinear.cuda import _loader, update
from gpulinear.cuda.launch import Launcher
from gpulinear.cuda.step import CudaStep, KernelLoadError
from gpulinear.plan import record_steps

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

NVRTC_CHILD = r"""
import sys
try:
    from cuda.bindings import nvrtc
except Exception as exc:
    print(f"UNAVAILABLE {type(exc).__name__}: {exc}"); sys.exit(3)
src = sys.stdin.read()
S = nvrtc.nvrtcResult.NVRTC_SUCCESS
err, prog = nvrtc.nvrtcCreateProgram(src.encode(), b"xpass.cu", 0, [], [])
opts = [b"-std=c++17", b"-arch=compute_90"]
(err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
if err != S:
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = bytes(max(size, 2))
    nvrtc.nvrtcGetProgramLog(prog, log)
    print(log.decode(errors="replace")); sys.exit(1)
"""


class CompileException(Exception):
    """Stands in for cupy.cuda.compiler.CompileException (same name, same role)."""


CompileException.__module__ = "cupy.cuda.compiler"


def fake_cupy(compile_source):
    """A `cupy` module with what _loader touches: cuda.Device, RawModule (compiling with the
    real NVRTC when compile_source), get_function(...).attributes."""
    cupy = types.ModuleType("cupy")

    class Device:
        def __init__(self, i=0):
            self.id = i

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    class RawModule:
        def __init__(self, code, options=(), name_expressions=()):
            if compile_source:
                proc = subprocess.run([sys.executable, "-c", NVRTC_CHILD], input=code,
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode == 3:
                    pytest.skip(f"NVRTC not available here: {proc.stdout.strip()}")
                if proc.returncode:
                    raise CompileException(proc.stdout.strip())

        def get_function(self, name):
            return types.SimpleNamespace(attributes={"num_regs": 0})

    cupy.cuda = types.SimpleNamespace(Device=Device, compiler=types.SimpleNamespace(
        CompileException=CompileException))
    cupy.RawModule = RawModule
    return cupy


@pytest.fixture
def gpu_stand_in(monkeypatch):
    """Install a fake cupy (see fake_cupy) and clear the loader's module cache around a test."""
    def install(compile_source=False):
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy(compile_source))
        _loader._module.cache_clear()
    yield install
    _loader._module.cache_clear()


def build(dtype="float32"):
    """A CudaStep on NumPy arrays with the real Launcher: it compiles and loads the kernels."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 5)), rng.normal(size=(20, 1))
    cfgs = gl.grid(depth=[1, 3], width=1, lr=1e-2)
    return CudaStep(X, Y, cfgs, gl.Lp(4), np.dtype(dtype), record_steps(4, 2), None, np.inf,
                    xp=np, launcher=Launcher())


def broken_source(monkeypatch):
    good = _loader.kernel_source("xpass.cu")
    bad = good.replace("__global__", "__global__ int gl_broken = ;\n__global__", 1)
    monkeypatch.setattr(_loader, "kernel_source", lambda name: bad)


def no_nvvm(monkeypatch):
    pytest.importorskip("numba.cuda")
    if SIM:
        pytest.skip("the CUDA simulator is on in this process: Numba compiles nothing")
    import numba.cuda.cudadrv.nvvm as nvvm
    import numba.cuda.dispatcher as numba_dispatcher
    monkeypatch.setattr(nvvm, "_nvvm", None)               # cuda-bindings found no libnvvm
    # no driver here: the compile asks the device only for its compute capability
    monkeypatch.setattr(numba_dispatcher, "get_current_device",
                        lambda: types.SimpleNamespace(compute_capability=(9, 0)))


def ptx_refused(kind):
    def apply(monkeypatch):
        pytest.importorskip("numba.cuda")
        if SIM:
            pytest.skip("the CUDA simulator is on in this process")
        from numba.cuda.cudadrv.driver import CudaAPIError, LinkerError
        exc = (CudaAPIError(222, "Call to cuModuleLoadDataEx results in "
                                 "CUDA_ERROR_UNSUPPORTED_PTX_VERSION") if kind == "driver" else
               LinkerError("nvJitLink error: ERROR 4 (NVJITLINK_ERROR_PTX_COMPILE): ptxas "
                           "fatal: Unsupported .version 9.5; current version is '9.0'"))

        class Compiled:
            def bind(self):
                raise exc

        class Dispatcher:                                 # compile (NVVM) fine, load refused
            def compile(self, sig):
                assert len(sig) == 31
                return Compiled()
        monkeypatch.setattr(update, "kernel", lambda: Dispatcher())
    return apply


CASES = {
    "broken source": (broken_source, True, "the X-pass", "CompileException"),
    "missing NVVM": (no_nvvm, False, "the update kernel", "NvvmSupportError"),
    "PTX refused by the driver": (ptx_refused("driver"), False, "link and load",
                                  "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
    "PTX refused by nvJitLink": (ptx_refused("nvjitlink"), False, "link and load",
                                 "Unsupported .version 9.5"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_failures_surface_when_the_step_is_built(monkeypatch, gpu_stand_in, case):
    breaks, compile_source, stage, words = CASES[case]
    gpu_stand_in(compile_source)
    breaks(monkeypatch)
    with pytest.raises(KernelLoadError) as info:
        build()
    assert stage in str(info.value) and words in str(info.value), str(info.value)[:500]
    assert info.value.__cause__ is not None                 # the original error, chained


@pytest.mark.parametrize("case", ["broken source", "PTX refused by the driver"])
def test_train_falls_back_with_the_reason_or_raises_with_fused_true(monkeypatch, gpu_stand_in,
                                                                   capsys, case):
    breaks, compile_source, stage, words = CASES[case]
    gpu_stand_in(compile_source)
    breaks(monkeypatch)
    from gpulinear import step as step_mod
    made = []

    class ArrayStepOnNumPy(step_mod.ArrayStep):          # "the array step on CuPy", on NumPy
        def __init__(self, xp, *a, **k):
            made.append(xp)
            super().__init__(np, *a, **k)

    monkeypatch.setattr(step_mod, "ArrayStep", ArrayStepOnNumPy)
    monkeypatch.setattr(engine, "resolve_backend", lambda backend: "cuda")
    monkeypatch.setattr(engine, "_device_chunks", lambda configs, *a: [slice(0, len(configs))])
    monkeypatch.setattr(engine, "_new_cuda_step", lambda X, Y, cfgs, loss, dt, rec, tg, lim:
                        CudaStep(X, Y, cfgs, loss, dt, rec, tg, lim, xp=np, launcher=Launcher()))
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    cfgs = gl.grid(depth=[1, 2], lr=1e-2)
    res = gl.train(X, y, cfgs, loss="l4", steps=3, log_every=1, backend="cuda", dtype="float32")
    assert len(made) == 1 and res.meta["step"] != "cuda-fused"
    reason = res.meta["fused_fallback"]
    assert reason.startswith("KernelLoadError") and stage in reason and words in reason
    err = [line for line in capsys.readouterr().err.splitlines() if "fused CUDA step" in line]
    assert len(err) == 1 and "KernelLoadError" in err[0]
    ref = gl.train(X, y, cfgs, loss="l4", steps=3, log_every=1, backend="numpy", dtype="float32")
    np.testing.assert_array_equal(res.loss, ref.loss)       # the array step ran, on NumPy
    _loader._module.cache_clear()
    with pytest.raises(KernelLoadError, match=stage):
        gl.train(X, y, cfgs, loss="l4", steps=3, log_every=1, backend="cuda", dtype="float32",
                 fused=True)


class Stream:
    """Stands in for the step's CuPy stream in the trial launch."""
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def synchronize(self):
        pass


def test_a_refused_launch_surfaces_at_the_build(monkeypatch, gpu_stand_in):
    pytest.importorskip("numba.cuda")
    if SIM:
        pytest.skip("the CUDA simulator is on in this process")
    from numba.cuda.cudadrv.driver import CudaAPIError
    gpu_stand_in(False)

    class Compiled:
        def bind(self):
            pass

    class Dispatcher:
        def compile(self, sig):
            return Compiled()
    monkeypatch.setattr(update, "kernel", lambda: Dispatcher())

    class RefusingLauncher(Launcher):
        def raw(self, name, kernel, grid, block, args, shared_mem=0):
            raise CudaAPIError(701, "Call to cuLaunchKernel results in "
                                    "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES")

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 5)), rng.normal(size=(20, 1))
    with pytest.raises(KernelLoadError, match="trial launch.*LAUNCH_OUT_OF_RESOURCES"):
        CudaStep(X, Y, gl.grid(depth=[1, 3], lr=1e-2), gl.Lp(4), np.dtype("float32"),
                 record_steps(4, 2), None, np.inf, xp=np, launcher=RefusingLauncher(),
                 replay=types.SimpleNamespace(stream=Stream()))
