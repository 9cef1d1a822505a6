"""Regression tests for the crash defects of the review (shared/notes/gpu-step.md, section 2),
run on the CPU: each failed on the code before the fix.

1. gpulinear.e2e mixed a NumPy array into a CuPy expression (k > 1, depth >= 3): CuPy raises
   TypeError.  A strict stand-in for CuPy (its arrays refuse NumPy operands, as CuPy's do) runs
   the same code here.
2. train(backend="cuda") fell back from the fused kernel only on ImportError/ValueError; numba-cuda
   seeing no GPU and a missing NVRTC are RuntimeErrors.
"""
import sys
import types

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import engine


class StrictArray(np.ndarray):
    """An ndarray that, like cupy.ndarray, refuses to compute with a plain NumPy array."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for a in inputs + tuple(kwargs.get("out", ())):
            if type(a) is np.ndarray and a.ndim > 0:
                raise TypeError(f"Unsupported type {type(a)}")   # CuPy's message
        args = [a.view(np.ndarray) if isinstance(a, StrictArray) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in kwargs["out"])
        out = getattr(ufunc, method)(*args, **kwargs)
        return _wrap(out)


StrictArray.__module__ = "cupy"          # what gpulinear.backend.array_namespace looks at


def _wrap(x):
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x.view(StrictArray) if isinstance(x, np.ndarray) else x


def _fake_cupy():
    def delegate(mod):
        def getattr_(name):
            fn = getattr(mod, name)
            if not callable(fn) or isinstance(fn, type):
                return fn
            def wrapped(*a, **k):
                a = [v.view(np.ndarray) if isinstance(v, StrictArray) else v for v in a]
                return _wrap(fn(*a, **k))
            return wrapped
        return getattr_
    cp = types.ModuleType("cupy")
    cp.__getattr__ = delegate(np)
    cp.linalg = types.ModuleType("cupy.linalg")
    cp.linalg.__getattr__ = delegate(np.linalg)
    cp.ndarray = StrictArray
    return cp


@pytest.mark.parametrize("N", [3, 5])
def test_e2e_rule_k_above_1_runs_on_a_cupy_like_namespace(monkeypatch, N):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    rng = np.random.default_rng(0)
    We, G = rng.normal(size=(4, 3, 6)), rng.normal(size=(4, 3, 6))
    with pytest.raises(TypeError):                 # the stand-in is as strict as CuPy
        _ = We.view(StrictArray) + np.ones((3, 6))
    got = gl.end_to_end_update(We.view(StrictArray), G.view(StrictArray), N, 0.1)
    assert isinstance(got, StrictArray)
    np.testing.assert_allclose(np.asarray(got.view(np.ndarray)),
                               gl.end_to_end_update(We, G, N, 0.1), rtol=1e-13, atol=0)


@pytest.mark.parametrize("exc", [RuntimeError("numba-cuda: CUDA driver not found"),
                                 ImportError("no module named numba"),
                                 ValueError("d too large")])
def test_fused_step_failure_falls_back_to_the_array_step(monkeypatch, capsys, exc):
    """fused=None: any failure to build the fused CUDA step falls back, saying why; fused=True
    raises it.  The CUDA backend is stood in by NumPy (no GPU here)."""
    made = []

    class Boom:
        def __init__(self, *a, **k):
            raise exc

    fake_cuda_step = types.ModuleType("gpulinear.cuda.step")
    fake_cuda_step.CudaStep = Boom
    monkeypatch.setitem(sys.modules, "gpulinear.cuda.step", fake_cuda_step)
    monkeypatch.setitem(sys.modules, "cupy", np)            # the array step on "CuPy" = NumPy
    from gpulinear import step as step_mod

    class Recording(step_mod.ArrayStep):
        def __init__(self, xp, *a, **k):
            made.append(xp)
            super().__init__(np, *a, **k)

    monkeypatch.setattr(step_mod, "ArrayStep", Recording)
    X, y = gl.datasets.synthetic_regression(m=30, d=4, seed=1)
    cfgs = gl.grid(depth=[1, 2], lr=1e-2)
    args = ("cuda", None, X, y[:, None], cfgs, gl.Lp(4), np.dtype("float64"),
            gl.plan.record_steps(5, 1), None, np.inf)
    step = engine._make_step(*args)
    assert isinstance(step, Recording) and made == [np]
    assert f"fused CUDA step not used ({type(exc).__name__}" in capsys.readouterr().err
    with pytest.raises(type(exc)):
        engine._make_step("cuda", True, *args[2:])
