"""The Numba-CUDA fused kernel (gpulinear.cuda.fused) under the CUDA simulator, on the CPU.

Run in its own process, with the variable set before numba is imported:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m sim tests/test_cuda_sim.py

Elsewhere the whole module skips.  Sizes stay tiny (m=37, d=5, 32 threads, one or two blocks):
the simulator runs one Python thread per CUDA thread.  The CUDA C kernels (kernels/*.cu) cannot
run here; their twins are checked against them in tests/test_cuda_gpu.py on a GPU only.
"""
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("simulator tests: run `NUMBA_ENABLE_CUDASIM=1 python -m pytest -m sim "
                "tests/test_cuda_sim.py` in a separate process", allow_module_level=True)
pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")

import gpulinear as gl  # noqa: E402
from gpulinear.cuda import fused, twins, width1_start  # noqa: E402

pytestmark = pytest.mark.sim

if not fused._SIM:
    pytest.skip("numba was imported before NUMBA_ENABLE_CUDASIM=1 took effect",
                allow_module_level=True)

STEPS, LOG_EVERY = 20, 5


def rtol(dtype):
    return 4 * np.sqrt(np.finfo(dtype).eps)


def problem(lrs=(0.05, 0.05, 0.03), depths=(1, 2, 3), m=37, d=5, seed=0):
    """X (m, d), Y (m,), Configs and the fused kernel's inputs built from gl.init_weights."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    Y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=m)
    cfgs = [gl.Config(depth=n, lr=lr, init="identity", seed=i + 1)
            for i, (n, lr) in enumerate(zip(depths, lrs))]
    W1, wrest, depth = width1_start(cfgs, d)
    return X, Y, cfgs, W1, wrest, depth, np.array(lrs)


def end_to_end(W1, wrest, depth):
    used = np.arange(wrest.shape[1]) < np.asarray(depth)[:, None] - 1
    return np.prod(np.where(used, wrest, 1.0), axis=1)[:, None] * W1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [2.0, 4.0, 3.0])
def test_fused_matches_twin(p, dtype):
    X, Y, _, W1, wrest, depth, lr = problem()
    got = fused.train_width1_fused(X.astype(dtype), Y.astype(dtype), W1.astype(dtype),
                                   wrest.astype(dtype), lr, p, STEPS, LOG_EVERY, depth=depth)
    ref = twins.train_width1(X, Y, W1, wrest, lr, p, STEPS, LOG_EVERY, depth=depth)
    assert got.loss.dtype == dtype
    np.testing.assert_array_equal(got.steps, ref["steps"])
    tol = 1e-12 if dtype == np.float64 else rtol(dtype)
    np.testing.assert_allclose(got.loss, ref["loss"], rtol=tol)
    np.testing.assert_allclose(got.W1, ref["W1"], rtol=tol, atol=tol * np.abs(ref["W1"]).max())
    np.testing.assert_allclose(got.wrest, ref["wrest"], rtol=tol)
    assert (got.diverged_at == -1).all() and got.alive.all()


@pytest.mark.parametrize("p", [2.0, 4.0])
def test_fused_matches_gl_train(p):
    X, Y, cfgs, W1, wrest, depth, lr = problem()
    got = fused.train_width1_fused(X, Y, W1, wrest, lr, p, STEPS, LOG_EVERY, depth=depth)
    res = gl.train(X, Y, cfgs, loss=gl.Lp(p), steps=STEPS, log_every=LOG_EVERY, backend="numpy")
    np.testing.assert_array_equal(got.steps, res.steps)
    np.testing.assert_allclose(got.loss, res.loss, rtol=1e-12)
    np.testing.assert_allclose(end_to_end(got.W1, got.wrest, depth), res.end_to_end[:, 0],
                               rtol=1e-12)
    np.testing.assert_array_equal(got.diverged_at, res.diverged_at)


def test_divergence_is_isolated_and_matches_train():
    """Config 1 blows up (lr 40): it freezes at the step gl.train says; the others are bitwise
    what they are without it, over two blocks of 2 configs."""
    limit = 1e3
    X, Y, cfgs, W1, wrest, depth, lr = problem(lrs=(0.05, 40.0, 0.03))
    got = fused.train_width1_fused(X, Y, W1, wrest, lr, 4.0, STEPS, LOG_EVERY, limit,
                                   depth=depth, configs_per_block=2)
    res = gl.train(X, Y, cfgs, loss="l4", steps=STEPS, log_every=LOG_EVERY, backend="numpy",
                   diverge_above=limit)
    assert res.diverged_at[1] >= 0
    np.testing.assert_array_equal(got.diverged_at, res.diverged_at)
    np.testing.assert_array_equal(got.alive, [True, False, True])
    np.testing.assert_allclose(got.loss, res.loss, rtol=1e-12)
    keep = [0, 2]
    alone = fused.train_width1_fused(X, Y, W1[keep], wrest[keep], lr[keep], 4.0, STEPS,
                                     LOG_EVERY, limit, depth=depth[keep], configs_per_block=2)
    np.testing.assert_array_equal(alone.loss, got.loss[keep])
    np.testing.assert_array_equal(alone.W1, got.W1[keep])


def test_steps_per_launch_resumes_exactly():
    X, Y, _, W1, wrest, depth, lr = problem()
    one = fused.train_width1_fused(X, Y, W1, wrest, lr, 3.0, 13, 4, depth=depth)
    many = fused.train_width1_fused(X, Y, W1, wrest, lr, 3.0, 13, 4, depth=depth,
                                    steps_per_launch=5)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_weight_decay_and_degenerate_shapes():
    """B = 1, d = 1, depth 2, weight decay, m not a multiple of the block size, 16 threads."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(19, 1)), rng.normal(size=19)
    W1, wrest = np.array([[0.3]]), np.array([[1.2]])
    got = fused.train_width1_fused(X, Y, W1, wrest, 0.1, 2.0, 9, 4, weight_decay=0.05,
                                   threads=16)
    ref = twins.train_width1(X, Y, W1, wrest, [0.1], 2.0, 9, 4, weight_decay=[0.05])
    np.testing.assert_allclose(got.loss, ref["loss"], rtol=1e-12)
    np.testing.assert_allclose(got.wrest, ref["wrest"], rtol=1e-12)


def test_bad_arguments():
    X, Y, _, W1, wrest, depth, lr = problem()
    with pytest.raises(ValueError, match="power of two"):
        fused.train_width1_fused(X, Y, W1, wrest, lr, 2.0, 1, 1, threads=48)
    with pytest.raises(ValueError, match="depth"):
        fused.train_width1_fused(X, Y, W1, wrest, lr, 2.0, 1, 1, depth=[1, 2, 5])


def test_train_fused_width1_path_equals_numpy_train():
    """The path train(backend='cuda') takes for eligible grids, run here on the simulator."""
    from gpulinear import engine
    X, Y, cfgs, *_ = problem()
    cfgs = cfgs + [gl.Config(depth=2, lr=80.0, init_scale=0.3),     # one that diverges
                   gl.Config(depth=3, lr=0.05, loss="l2", seed=4)]      # another lp loss
    X64, Y64 = X, Y[:, None]
    assert engine._width1_eligible(cfgs, gl.Lp(4), Y64, None)
    assert not engine._width1_eligible(cfgs + [gl.Config(optimizer="adam")], gl.Lp(4), Y64, None)
    got = engine._train_fused_width1(X64, Y64, cfgs, gl.Lp(4), np.dtype(np.float64), STEPS,
                                     LOG_EVERY, None, "cuda")
    ref = gl.train(X, Y, cfgs, loss="l4", steps=STEPS, log_every=LOG_EVERY, backend="numpy")
    np.testing.assert_array_equal(got.steps, ref.steps)
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    live = ~ref.diverged
    np.testing.assert_allclose(got.loss[live], ref.loss[live], rtol=1e-12)
    np.testing.assert_allclose(got.end_to_end[live], ref.end_to_end[live], rtol=1e-12)
