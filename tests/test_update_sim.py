"""The Numba-CUDA update kernel (gpulinear.cuda.update) under the CUDA simulator, on the CPU.

Run in its own process, with the variable set before numba is imported:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m sim tests/test_update_sim.py

Elsewhere the module skips.  The oracle is the float64 NumPy twin (update_twin), itself checked
against gl.train in tests/test_update_twin.py.  Sizes stay small (32 threads per block, d = 5-6,
m = 20): the simulator runs one Python thread per CUDA thread, one block at a time.
"""
import math
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("simulator tests: run `NUMBA_ENABLE_CUDASIM=1 python -m pytest -m sim "
                "tests/test_update_sim.py` in a separate process", allow_module_level=True)
pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install numba-cuda)")

import gpulinear as gl  # noqa: E402
import update_problems as up  # noqa: E402
from gpulinear import optim  # noqa: E402
from gpulinear.cuda import layout, update  # noqa: E402
from gpulinear.cuda.launch import Launcher, RecordingLauncher  # noqa: E402
from gpulinear.losses import config_loss  # noqa: E402

pytestmark = pytest.mark.sim

CONFIGS_PER_BLOCK = 2      # 64 simulator threads a block: two warps on different configs


def kernel_update(packed, Gpart, Lpart, W, clock, S, m, k, d, steps, log_every, limit):
    """One launch on copies (the simulator writes NumPy arrays in place); same signature and
    return as update_twin."""
    packed = layout.Packed(*(a.copy() for a in packed))
    W = W.copy()
    update.launch_update(Launcher(), packed, Gpart, Lpart, W, clock, S, m, k, d, steps,
                         log_every, limit, configs_per_block=CONFIGS_PER_BLOCK)
    return packed, W


def random_launch(k, dtype, t, steps, seed, d=5, cfgs=None):
    """A packed grid (default up.mixed_grid(k)) with random state, counts, G and L parts, and
    the special cases on three extra configs F, F + 1, F + 2 (so every optimizer of the grid
    still steps): F frozen, F + 1 a non-finite loss, F + 2 a non-finite W_e; targets: 3 and 6
    crossed now, 7 not, 5 already reached.  Returns the kernel/twin arguments."""
    S, m = 2, 20
    cfgs = up.mixed_grid(k) if cfgs is None else list(cfgs)
    F = len(cfgs)
    cfgs += [gl.Config(depth=2, width=3, lr=0.1, optimizer="momentum", seed=20),
             gl.Config(depth=1, lr=0.1, parameterization="e2e", seed=21),
             gl.Config(depth=3, width=2, lr=0.1, optimizer="adam", seed=22)]
    C = len(cfgs)
    losses = [config_loss(c, "l2") for c in cfgs]
    packed, W = up.start(cfgs, losses, d, k, dtype, n_records=4)
    rng = np.random.default_rng(seed)
    theta = packed.theta + 0.1 * rng.normal(size=packed.theta.shape)   # not just the init
    state = rng.uniform(0.5, 1.0, size=packed.state.shape)   # >= 0: sums of squares
    for c, cfg in enumerate(cfgs):                            # rmsprop centered: sq > ga^2
        if cfg.optimizer == "rmsprop":
            s = optim.OPTIMIZERS["rmsprop"].state_fields.index("grad_avg")
            start = packed.soff[c] + s * packed.psize[c]
            state[start:start + packed.psize[c]] *= 0.1
    packed = packed._replace(theta=theta.astype(dtype), state=state.astype(dtype),
                             count=rng.integers(0, 6, size=C).astype(np.int64))
    W[:, :d] = layout.end_to_end(packed).reshape(-1, d)
    packed.alive[F] = 0
    packed.diverged_at[F] = 1
    Gpart = rng.normal(size=(S, C * k, d + 2)).astype(dtype)
    Lpart = rng.uniform(0, 1, size=(S, C * k)).astype(dtype)
    Lpart[1, (F + 1) * k] = np.nan
    W[(F + 2) * k, 2] = np.inf
    loss = Lpart.astype(np.float64).sum(axis=0).reshape(C, k).sum(axis=1) / (packed.p * m)
    packed.target[3] = loss[3] * 1.01
    packed.target[6] = loss[6] * 1.01
    packed.target[7] = loss[7] * 0.99                         # not reached
    packed.target[5] = loss[5] * 1.01
    packed.reached_at[5] = 0
    clock = np.array([t], dtype=np.int64)
    return packed, Gpart, Lpart, W, clock, S, m, k, d, steps


def rtol(dtype):
    """Per array, normwise.  One launch moves each parameter and state entry by one optimizer
    step; the kernel sums in float64 and rounds once on the store (0.5 eps), and its dtype-stored
    G, suffix products and q vectors (one rounding each per layer) enter only through lr g, a
    fraction of |p|.  Measured worst: 0.64 eps (float64), 0.48 eps (float32) on this grid
    (2026-12, simulator); 8 eps leaves room for other draws and still fails a wrong sign."""
    return 8 * np.finfo(dtype).eps


def assert_close(got, want, dtype, what):
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite), what
    scale = max(np.abs(want[finite]).max(initial=0.0), 1e-30)
    err = np.abs(got[finite].astype(np.float64) - want[finite]).max(initial=0.0)
    assert err <= rtol(dtype) * scale, (what, err / scale)


def tf1_grid():
    """Width-1 chains (the kernel's fast path), a wider one and e2e, every optimizer, with TF 1
    semantics (gl.optim.semantics) where they differ from torch's."""
    c = gl.Config
    cfgs = []
    for i, opt in enumerate(optim.OPTIMIZER_NAMES):
        sem = optim.semantics("tf1", opt)
        lr = 0.5 if opt == "adadelta" else 0.02
        cfgs += [c(depth=1 + 2 * (i % 2), width=1, lr=lr, optimizer=opt, init="normal",
                   init_scale=0.3, seed=30 + i, weight_decay=0.01 * (i % 3), **sem),
                 c(depth=8 - i % 3, width=1, lr=lr, optimizer=opt, init="identity", seed=40 + i,
                   **sem)]
    cfgs += [c(depth=3, width=4, lr=0.01, optimizer="adam", init="normal", init_scale=0.3,
               seed=50, **optim.semantics("tf1", "adam")),
             c(depth=3, lr=0.03, parameterization="e2e", init="identity", seed=51),
             c(depth=2, width=(9,), lr=0.01, optimizer="adagrad", init="normal", init_scale=0.3,
               seed=52, **optim.semantics("tf1", "adagrad"))]
    return cfgs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 3])
def test_kernel_matches_twin_one_launch(k, dtype):
    check_one_launch(random_launch(k, dtype, t=2, steps=10, seed=k), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_matches_twin_tf1_semantics_and_wide_inputs(dtype):
    """d = 45 > 32: every lane holds one or two inputs, so each butterfly step of the warp
    reductions matters (at d = 5 only lanes 0-4 hold values); TF 1 AdaGrad (eps 0,
    initial_accumulator 0.1) and Adam (eps_hat) through the fast path and the general one."""
    cfgs = tf1_grid()
    assert any(cfg.hyper().get("eps_hat") for cfg in cfgs)
    assert any(cfg.hyper().get("initial_accumulator") for cfg in cfgs)
    check_one_launch(random_launch(1, dtype, t=3, steps=10, seed=7, d=45, cfgs=cfgs), dtype)


def check_one_launch(args, dtype):
    k, t = args[7], int(args[4][0])
    got, W_got = kernel_update(*args, log_every=2, limit=math.inf)
    want, W_want = update.update_twin(*args, log_every=2, limit=math.inf)
    packed = args[0]
    C = len(packed.depth)
    for name in ("alive", "diverged_at", "reached_at", "count"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    F = C - 3
    assert list(want.alive[F:]) == [0, 0, 0] and list(want.diverged_at[F:]) == [1, t, t]
    assert want.alive[:F].all() and (want.count[:F] == packed.count[:F] + 1).all()
    assert want.reached_at[3] == want.reached_at[6] == t and want.reached_at[7] == -1
    assert want.reached_at[5] == 0
    np.testing.assert_array_equal(np.isnan(got.log), np.isnan(want.log))
    assert_close(got.log, want.log, dtype, "log")
    for c in range(C):       # per config: scales differ (state of squares, deep vs e2e)
        for name, a, b in (("theta", layout.unpack_params(got, c), layout.unpack_params(want, c)),
                           ("W", [W_got[c * k:(c + 1) * k]], [W_want[c * k:(c + 1) * k]])):
            for x, y in zip(a, b):
                assert_close(x, y, dtype, (name, c))
        for field, arrs in layout.unpack_state(want, c).items():
            for x, y in zip(layout.unpack_state(got, c)[field], arrs):
                assert_close(x, y, dtype, (field, c))
        if not want.alive[c]:                                   # frozen: bit-for-bit unchanged
            np.testing.assert_array_equal(
                got.theta[got.poff[c]:got.poff[c] + got.psize[c]],
                packed.theta[packed.poff[c]:packed.poff[c] + packed.psize[c]])
            np.testing.assert_array_equal(W_got[c * k:(c + 1) * k], args[3][c * k:(c + 1) * k])
    np.testing.assert_array_equal(W_got[:, args[8]:], args[3][:, args[8]:])   # ldw padding


def test_kernel_last_step_logs_only():
    args = random_launch(3, np.float64, t=10, steps=10, seed=5)
    got, W_got = kernel_update(*args, log_every=4, limit=math.inf)
    want, _ = update.update_twin(*args, log_every=4, limit=math.inf)
    packed, W = args[0], args[3]
    np.testing.assert_array_equal(got.theta, packed.theta)
    np.testing.assert_array_equal(got.state, packed.state)
    np.testing.assert_array_equal(got.count, packed.count)
    np.testing.assert_array_equal(W_got, W)
    assert_close(got.log, want.log, np.float64, "log")
    assert np.isfinite(got.log[0, -1]) and np.isnan(got.log[:, :-1]).all()


def test_launch_shape():
    args = random_launch(1, np.float64, t=0, steps=3, seed=0)
    rec = RecordingLauncher()
    C = len(args[0].depth)
    update.launch_update(rec, *args, log_every=1, limit=math.inf, configs_per_block=3)
    (launch,) = rec.launches
    assert launch.name == "update" and launch.grid == (-(-C // 3),)
    assert launch.block == (96,) and len(launch.args) == 31
    assert launch.shared_mem == 0                      # k = 1: no Eq 10 scratch
    assert launch.args[-1].value == 1                  # do_update
    update.launch_update(rec, *args, log_every=1, limit=math.inf, do_update=False)
    assert rec.launches[-1].args[-1].value == 0
    assert rec.launches[-1].block == (32 * update.CONFIGS_PER_BLOCK,)
    args3 = random_launch(3, np.float64, t=0, steps=3, seed=0)      # e2e configs with k = 3
    update.launch_update(rec, *args3, log_every=1, configs_per_block=2)
    assert rec.launches[-1].shared_mem == 8 * 2 * (5 * 9 + 3)
    with pytest.raises(ValueError, match="configs_per_block"):
        update.launch_update(rec, *args, log_every=1, configs_per_block=33)


@pytest.mark.parametrize("k", [1, 3])
def test_kernel_steps_reproduce_train(k):
    """Several steps of (NumPy X-pass, kernel) against gl.train(backend="numpy"), float64."""
    steps, log_every, limit = 8, 3, 100.0
    X, Y = up.data(m=20, d=6, k=k)
    cfgs = up.mixed_grid(k)
    C, d = len(cfgs), X.shape[1]
    res = gl.train(X, Y, cfgs, loss="l2", steps=steps, log_every=log_every, backend="numpy",
                   target=0.5, diverge_above=limit)
    packed, W = up.run(kernel_update, X, Y, cfgs, "l2", steps, log_every, limit=limit,
                       targets=np.full(C, 0.5))
    np.testing.assert_array_equal(packed.diverged_at, res.diverged_at)
    np.testing.assert_array_equal(packed.reached_at, res.steps_to_target)
    growth = np.maximum(1.0, np.nanmax(res.loss, axis=1) / res.loss[:, 0])
    We = W[:, :d].reshape(C, k, d)
    for c in range(C):       # float64 both ways, summation orders differ: as test_update_twin
        tol = 1e-12 * growth[c]
        np.testing.assert_allclose(packed.log[c], res.loss[c], rtol=tol)
        np.testing.assert_allclose(We[c], res.end_to_end[c], rtol=tol,
                                   atol=tol * np.abs(res.end_to_end[c]).max())
