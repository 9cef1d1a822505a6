"""Host-side bookkeeping of the CUDA backend, on the CPU: kernel sources (source tree and wheel),
header inlining, entry discovery, memory estimate and chunk planner, import hygiene, device_info
without a GPU, the NumPy twins against the engine, and the optimizer table."""
import math
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import cuda as glc
from gpulinear.cuda import _loader, twins

REPO = pathlib.Path(__file__).resolve().parents[1]


# ---- kernel sources ---------------------------------------------------------------------------

def test_loader_finds_sources_in_source_tree():
    folder = _loader.kernel_dir()
    assert pathlib.Path(str(folder)).resolve() == (REPO / "kernels").resolve()
    names = _loader.kernel_names()
    assert {"lp_loss.cu", "e2e.cu", "optim.cu"} <= set(names)
    for name in names:
        src = _loader.kernel_source(name)
        assert '#include "' not in src, f"{name}: a local include was not inlined"
        assert "gl_block_sum" in src or name == "optim.cu"
        assert _loader.name_expressions(src), f"{name} defines no gl_* entry point"


def test_entry_points_and_name_expressions():
    src = _loader.kernel_source("optim.cu")
    templated, plain = _loader.entry_points(src)
    assert set(templated) == {f"gl_opt_{n}" for n in
                              ("gd", "momentum", "adagrad", "adadelta", "adam", "rmsprop")}
    assert plain == ["gl_count_step"]
    names = _loader.name_expressions(src)
    assert "gl_opt_adam<float>" in names and "gl_opt_adam<double>" in names
    assert "gl_count_step" in names
    assert _loader.name_expressions(_loader.kernel_source("lp_loss.cu")) == [
        "gl_lp_value_grad<float>", "gl_lp_value_grad<double>"]


def test_header_inlining(tmp_path):
    (tmp_path / "a.cuh").write_text('#pragma once\n#include "b.cuh"\nint a;\n')
    (tmp_path / "b.cuh").write_text("#pragma once\nint b;\n")
    text = '#include "a.cuh"\n#include "b.cuh"\n#include <cstdio>\nint main;\n'
    out = _loader.inline_headers(text, tmp_path)
    assert out.count("int a;") == 1 and out.count("int b;") == 1   # each header once
    assert out.index("int b;") < out.index("int a;")               # nested first
    assert "#include <cstdio>" in out and "pragma once" not in out
    with pytest.raises(FileNotFoundError, match="missing.cuh"):
        _loader.inline_headers('#include "missing.cuh"\n', tmp_path)


def test_kernel_source_unknown_name():
    with pytest.raises(FileNotFoundError, match="nope.cu"):
        _loader.kernel_source("nope.cu")


def test_loader_finds_sources_in_installed_wheel(tmp_path):
    pytest.importorskip("hatchling", reason="hatchling is not installed: cannot build the wheel "
                                            "offline (pip install hatchling)")
    tomllib = pytest.importorskip("tomllib", reason="needs Python >= 3.11 to read pyproject")
    src = tmp_path / "src"
    src.mkdir()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    forced = meta["tool"]["hatch"]["build"]["targets"]["wheel"].get("force-include", {})
    assert forced.get("kernels") == "gpulinear/_kernels", "pyproject no longer ships kernels/"
    for item in ("pyproject.toml", "README.md", "gpulinear", *forced):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, src / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (REPO / item).exists():
            shutil.copy(REPO / item, src / item)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("gpulinear\n")       # hatchling needs the readme
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "whl"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel, = (tmp_path / "whl").glob("gpulinear-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for k in ("lp_loss.cu", "e2e.cu", "optim.cu", "gl_common.cuh"):
        assert f"gpulinear/_kernels/{k}" in names, f"{k} is not in the wheel: {names}"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import pathlib, gpulinear.cuda._loader as L; d = L.kernel_dir(); "
            "print(d); assert 'site' in str(d) and '_kernels' in str(d), d; "
            "assert 'gl_block_sum' in L.kernel_source('lp_loss.cu'); print(L.kernel_names())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "e2e.cu" in proc.stdout


# ---- import hygiene -----------------------------------------------------------------------------

def test_import_does_not_pull_cupy_or_numba():
    code = ("import sys, gpulinear, gpulinear.cuda, gpulinear.cuda.ops, gpulinear.cuda.twins; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'cupy', 'numba', 'cupyx'}); "
            "print(bad); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- memory estimate and chunks -----------------------------------------------------------------

def test_memory_per_config_formula():
    # depth 1, k = 1: P = d; no state; prefix d; elems = 3P + P + P + 2d + 3m + 1
    d, m = 128, 2565
    got = glc.memory_per_config(1, (), 1, d, m, "float64", "gd")
    assert got == (3 * d + d + d + 2 * d + 3 * m + 1) * 8 + 24
    assert glc.memory_per_config(1, (), 1, d, m, "float32", "gd") < got
    sizes = [glc.memory_per_config(3, 100, 1, d, m, "float64", o) for o in
             ("gd", "momentum", "adadelta", "rmsprop")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert glc.memory_per_config(3, (100, 100), 1, d, m, "float64") == \
        glc.memory_per_config(3, 100, 1, d, m, "float64")
    assert glc.memory_per_config(3, 100, 1, d, m, "float64", e2e=True) < sizes[0]
    assert set(glc.STATE_COPIES) == set(gl.OPTIMIZERS)


def test_plan_chunks_fits_in_one():
    plan = glc.plan_chunks(10, 1000, free_bytes=10**9)
    assert plan.chunks == [slice(0, 10)] and plan.message == ""


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_plan_chunks_splits_evenly_and_says_so(n):
    plan = glc.plan_chunks(n, 1000, free_bytes=40_000, shared_bytes=2_000)   # 30 per chunk
    covered = [i for s in plan.chunks for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert max(s.stop - s.start for s in plan.chunks) <= 30
    sizes = [s.stop - s.start for s in plan.chunks]
    assert max(sizes) - min(sizes) <= max(sizes) - 1 if len(sizes) > 1 else True
    if n > 30:
        assert len(plan.chunks) == math.ceil(n / 30) and "chunks" in plan.message
    else:
        assert plan.message == ""


def test_plan_chunks_too_big_is_a_clear_error():
    with pytest.raises(MemoryError, match="one configuration needs"):
        glc.plan_chunks(5, 10**9, free_bytes=10**8)


# ---- device info without a GPU ------------------------------------------------------------------

def test_device_info_says_why():
    info = glc.device_info()
    assert set(info) >= {"available", "why", "cupy", "numba_cuda", "tf32"}
    text = glc.format_device_info(info)
    if not info["available"]:
        assert "unavailable" in text and info["why"] in text
    else:
        assert info["name"] in text


# ---- the twins against the engine's own math ----------------------------------------------------

@pytest.mark.parametrize("p", [2.0, 4.0, 3.0, 2.5])
def test_lp_twin_matches_losses(p):
    rng = np.random.default_rng(1)
    Z, Yt = rng.normal(size=(4, 2, 37)), rng.normal(size=(2, 37))
    values, R, out = twins.lp_value_grad(Z, Yt, p)
    Zc, outc = Z.copy(), np.empty_like(Z)
    ref = gl.Lp(p).value_and_grad(Zc, Yt, outc, np.empty_like(Z))
    np.testing.assert_allclose(values, ref, rtol=1e-13)
    np.testing.assert_allclose(R, Zc, rtol=1e-15)
    np.testing.assert_allclose(out, outc, rtol=1e-13)


def test_e2e_twin_freezes_and_zero():
    rng = np.random.default_rng(2)
    W, G = rng.normal(size=(3, 1, 6)), rng.normal(size=(3, 1, 6))
    W[1] = 0
    alive = np.array([True, True, False])
    new = twins.e2e_k1(W, G, 3, np.full(3, 0.1), np.full(3, 0.01), alive)
    assert np.array_equal(new[1], np.zeros((1, 6))) and np.array_equal(new[2], W[2])
    np.testing.assert_allclose(new[0], gl.end_to_end_update(W[:1], G[:1], 3, 0.1, 0.01)[0])


def _width1_problem(B_lrs=(0.05, 0.05, 0.03), depths=(1, 2, 3), m=37, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    Y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=m)
    cfgs = [gl.Config(depth=n, lr=lr, init="identity", seed=i + 1)
            for i, (n, lr) in enumerate(zip(depths, B_lrs))]
    W1, wrest, depth = glc.width1_start(cfgs, d)
    return X, Y, cfgs, W1, wrest, depth, np.array(B_lrs)


@pytest.mark.parametrize("p", [2.0, 4.0, 3.0])
def test_width1_twin_matches_train(p):
    X, Y, cfgs, W1, wrest, depth, lr = _width1_problem(B_lrs=(0.05, 0.05, 40.0))
    limit = 1e3
    tw = twins.train_width1(X, Y, W1, wrest, lr, p, 30, 7, limit=limit, depth=depth)
    res = gl.train(X, Y, cfgs, loss=gl.Lp(p), steps=30, log_every=7, backend="numpy",
                   diverge_above=limit)
    np.testing.assert_array_equal(tw["steps"], res.steps)
    np.testing.assert_array_equal(tw["diverged_at"], res.diverged_at)
    assert res.diverged_at[2] >= 0 and (res.diverged_at[:2] < 0).all()
    np.testing.assert_allclose(tw["loss"], res.loss, rtol=1e-12)
    We = np.prod(np.where(np.arange(wrest.shape[1]) < depth[:, None] - 1, tw["wrest"], 1), axis=1)
    np.testing.assert_allclose(We[:, None] * tw["W1"], res.end_to_end[:, 0], rtol=1e-12)


def test_optimizer_twin_freezes():
    from gpulinear import optim
    rng = np.random.default_rng(3)
    params = [rng.normal(size=(3, 2, 4))]
    grads = [rng.normal(size=(3, 2, 4))]
    hyper = optim.hyper_arrays("adam", [{}, {"lr": 0.1}, {}], np.float64)
    state = optim.get_optimizer("adam").init(params)
    alive = np.array([True, False, True])
    new_p, new_s = twins.optimizer_update("adam", grads, state, params, hyper, alive)
    assert np.array_equal(new_p[0][1], params[0][1]) and not np.array_equal(new_p[0][0], params[0][0])
    assert new_s.count.tolist() == [1, 0, 1]


def test_optimizer_kernel_table_matches_package():
    from gpulinear import optim
    from gpulinear.cuda import ops
    assert set(ops.OPTIMIZER_KERNELS) == set(gl.OPTIMIZERS)
    for name, (fields, extra, _) in ops.OPTIMIZER_KERNELS.items():
        opt = optim.get_optimizer(name)
        state = opt.init([np.zeros((2, 1, 3))])
        assert set(fields) | {"count"} == set(state._fields), name
        assert set(extra) | {"lr", "weight_decay"} == set(opt.defaults), name
    pytest.importorskip("cupy", reason="CuPy is not installed (cuda_step_ops pins its matmul "
                                       "compute type)")
    ops_lp = ops.cuda_step_ops(gl.Lp(4), "adam", False, 3)
    assert ops_lp.value_and_grad and ops_lp.optimizer_update and ops_lp.e2e_update is None
    ops_x = ops.cuda_step_ops(gl.SoftmaxCrossEntropy(), "gd", True, 2)
    assert ops_x.value_and_grad is None and ops_x.e2e_update and ops_x.optimizer_update is None


# ---- the engine integration recipe, with NumPy stand-ins for the kernels ------------------------

class _InPlaceTwinOps:
    """What cuda_step_ops returns, with the twins doing the math: alive=None -> new arrays;
    alive given -> written in place into the caller's arrays, which are returned."""

    def __init__(self, name):
        self.name = name

    def e2e_update(self, We, G, depth, lr, weight_decay=0.0, alive=None):
        mask = np.ones(We.shape[0], bool) if alive is None else alive
        new = twins.e2e_k1(We, G, depth, lr, weight_decay, mask) if We.shape[1] == 1 else \
            np.where(mask[:, None, None], gl.end_to_end_update(We, G, depth, lr, weight_decay), We)
        if alive is None:
            return new
        We[...] = new
        return We

    def optimizer_update(self, grads, state, params, hyper, alive=None):
        mask = np.ones(params[0].shape[0], bool) if alive is None else alive
        new_p, new_s = twins.optimizer_update(self.name, grads, state, params, hyper, mask)
        if alive is None:
            return new_p, new_s
        for a, n in zip(params, new_p):
            a[...] = n
        for old, new in zip(state, new_s):
            for a, n in (zip(old, new) if isinstance(old, list) else [(old, new)]):
                a[...] = n
        return params, state


@pytest.mark.parametrize("name", ["gd", "adam", "rmsprop", "adagrad"])
def test_integration_recipe_equals_engine(monkeypatch, name):
    """ops.fused_update (what engine._update calls on CUDA) with NumPy stand-ins for the kernels:
    same results as the engine's own update, divergence and the all-alive fast path included."""
    from gpulinear import engine
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = X @ rng.normal(size=5)
    cfgs = gl.grid(depth=[1, 2, 3], width=[1, 3], lr=[1e-2, 30.0], optimizer=name,
                   init="identity") + gl.grid(depth=[1, 2, 3], lr=1e-2, parameterization="e2e",
                                              init="balanced")
    ref = gl.train(X, y, cfgs, loss="l4", steps=60, log_every=10, diverge_above=1e6)

    from gpulinear.cuda import ops

    def fake_ops(b):
        stand_in = _InPlaceTwinOps(b.optimizer.name)
        return ops.StepOps(None, stand_in.e2e_update, None if b.e2e else stand_in.optimizer_update)

    def update(b, G, prefixes, alive):               # what engine._update does on CUDA
        assert ops.fused_update(b, G, prefixes, alive)
    monkeypatch.setattr(ops, "bucket_ops", fake_ops)
    monkeypatch.setattr(engine, "_update", update)
    got = gl.train(X, y, cfgs, loss="l4", steps=60, log_every=10, diverge_above=1e6)
    assert (ref.diverged_at >= 0).any()
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-12)
