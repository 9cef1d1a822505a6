"""The CUDA update's packed layout and its float64 NumPy twin, on the CPU (always runs).

The twin (gpulinear.cuda.update.update_twin) is the oracle of the Numba kernel
(tests/test_update_sim.py); here it must itself reproduce gl.train(backend="numpy") when driven
by a NumPy stand-in of the X-pass (tests/update_problems.py), and Eq 10's eigen route (the
kernel's algebra) must equal gpulinear.e2e.precondition.
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import gpulinear as gl
import update_problems as up
from gpulinear import optim
from gpulinear.cuda import layout, update
from gpulinear.e2e import precondition
from gpulinear.losses import config_loss

EPS = np.finfo(np.float64).eps


# ---- the optimizer schema --------------------------------------------------------------------

def test_state_fields_match_the_state_namedtuples():
    assert optim.OPTIMIZER_NAMES == tuple(optim.OPTIMIZERS)
    for name, opt in optim.OPTIMIZERS.items():
        state = opt.init([np.zeros((1, 2, 3))])
        assert state._fields == opt.state_fields + ("count",), name


def test_kernel_handles_every_optimizer():
    pytest.importorskip("numba.cuda")
    from gpulinear.cuda import _update_kernel as K
    assert sorted(K.HANDLED) == list(range(len(optim.OPTIMIZER_NAMES)))
    assert K.H_LR == optim.HYPERPARAMETERS.index("lr")


def test_import_does_not_import_numba():
    code = ("import sys, gpulinear, gpulinear.cuda.update, gpulinear.cuda.layout; "
            "bad = [m for m in ('numba', 'cupy') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- pack / unpack -----------------------------------------------------------------------------

def _packed(k=3, d=5, dtype=np.float64):
    cfgs = up.mixed_grid(k)
    losses = [config_loss(c, "l2") for c in cfgs]
    packed, W = up.start(cfgs, losses, d, k, dtype, n_records=4)
    return cfgs, losses, packed, W


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pack_round_trip(dtype):
    k, d = 3, 5
    cfgs, losses, packed, W = _packed(k, d, dtype)
    C = len(cfgs)
    assert packed.theta.dtype == packed.hyper.dtype == packed.work.dtype == dtype
    assert packed.dims.shape == (C, 9) and packed.loff.shape == (C, 8)
    for c, cfg in enumerate(cfgs):
        want = gl.plan.start_weights(cfg, d, k)       # init_weights, or their product for e2e
        got = layout.unpack_params(packed, c)
        assert [g.shape for g in got] == [x.shape for x in want]
        for g, x in zip(got, want):
            np.testing.assert_array_equal(g, x.astype(dtype))
        assert list(packed.dims[c, :cfg.depth + 1]) == [d, *cfg.widths, k]
        assert not packed.dims[c, cfg.depth + 1:].any()
        opt = optim.get_optimizer(cfg.optimizer)
        assert optim.OPTIMIZER_NAMES[packed.opt[c]] == cfg.optimizer
        for name, col in zip(optim.HYPERPARAMETERS, packed.hyper[c]):
            want = cfg.hyper().get(name)
            want = opt.defaults.get(name, 0.0) if want is None else want
            assert col == np.asarray(want, dtype=dtype), (c, name)
        state = layout.unpack_state(packed, c)
        assert list(state) == list(opt.state_fields)
        assert all(a.shape == x.shape and not a.any() for arrs in state.values()
                   for a, x in zip(arrs, got))
        assert packed.p[c] == losses[c].p
    # the per-config blocks tile theta, state and work exactly, in order
    for off, size, flat in ((packed.poff, packed.psize, packed.theta),
                            (packed.soff, packed.psize * [len(optim.get_optimizer(c.optimizer)
                                                               .state_fields) for c in cfgs],
                             packed.state),
                            (packed.woff, [layout.work_size(c.depth, packed.dims[i], k,
                                                            packed.e2e[i])
                                           for i, c in enumerate(cfgs)], packed.work)):
        np.testing.assert_array_equal(off, np.concatenate([[0], np.cumsum(size)[:-1]]))
        assert off[-1] + size[-1] == flat.size
    assert (packed.alive == 1).all() and (packed.diverged_at == -1).all()
    assert np.isnan(packed.target).all() and np.isnan(packed.log).all()
    np.testing.assert_allclose(W[:, :d].reshape(C, k, d), layout.end_to_end(packed),
                               rtol=4 * np.finfo(dtype).eps * 8)


def test_pack_refuses_what_the_kernel_cannot_do():
    d, k = 4, layout.K_MAX + 1
    e2e = gl.Config(depth=2, lr=0.1, parameterization="e2e")
    We = np.zeros((k, d))
    with pytest.raises(ValueError, match="K_MAX"):
        layout.pack([e2e], [gl.Lp(2)], [[We]], d, k, np.float64, 2)
    deep = gl.Config(depth=2, width=3, lr=0.1)         # deep configs have no k limit
    layout.pack([deep], [gl.Lp(2)], [gl.init_weights(deep, d, k)], d, k, np.float64, 2)
    with pytest.raises(ValueError, match="lp loss"):
        layout.pack([deep], [gl.get_loss("xent")], [gl.init_weights(deep, d, k)], d, k,
                    np.float64, 2)
    with pytest.raises(ValueError, match="shapes"):
        layout.pack([deep], [gl.Lp(2)], [[np.zeros((3, d))]], d, k, np.float64, 2)


# ---- Eq 10 through the k x k side ----------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3, 8])
@pytest.mark.parametrize("k,d,rank", [(3, 5, 3), (2, 7, 2), (4, 4, 4), (3, 5, 1), (4, 6, 2)])
def test_eigen_route_equals_precondition(k, d, depth, rank):
    rng = np.random.default_rng(10 * k + d + rank)
    We = rng.normal(size=(k, rank)) @ rng.normal(size=(rank, d)) / math.sqrt(d)
    G = rng.normal(size=(k, d))
    got = update.precondition_eigen(We, G, depth)
    want = precondition(We, G, depth)
    # the eigenvectors of W W^T carry ~cond^2 eps of error where singular values are distinct
    s = np.linalg.svd(We, compute_uv=False)[:rank]
    tol = 64 * max(k, d) * EPS * (s[0] / s[-1]) ** 2
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= tol * scale, np.abs(got - want).max() / scale


def test_eigen_route_rank_deficient_is_not_sqrt_of_noise():
    """W_e of rank 1 (factors of width 1, k = 3): zero singular values must stay zero; the
    naive sqrt of W W^T's eigenvalues would give ~1e-8 and an error ~(1e-8)^(2/N)."""
    rng = np.random.default_rng(0)
    We = rng.normal(size=(3, 1)) @ rng.normal(size=(1, 6))
    G = rng.normal(size=(3, 6))
    for N in (2, 8):
        want = precondition(We, G, N)
        np.testing.assert_allclose(update.precondition_eigen(We, G, N), want,
                                   atol=1e3 * EPS * np.abs(want).max(), rtol=0)


# ---- the twin against gl.train ------------------------------------------------------------------

STEPS, LOG_EVERY, LIMIT, TARGET = 30, 7, 100.0, 0.3


@pytest.mark.parametrize("k", [1, 3])
def test_twin_reproduces_train(k):
    X, Y = up.data(m=20, d=6, k=k)
    cfgs = up.mixed_grid(k)
    C, d = len(cfgs), X.shape[1]
    res = gl.train(X, Y, cfgs, loss="l2", steps=STEPS, log_every=LOG_EVERY, backend="numpy",
                   target=TARGET, diverge_above=LIMIT)
    packed, W = up.run(update.update_twin, X, Y, cfgs, "l2", STEPS, LOG_EVERY, limit=LIMIT,
                       targets=np.full(C, TARGET))
    assert res.diverged_at[9] > 0 and (np.delete(res.diverged_at, 9) == -1).all()
    assert (res.steps_to_target >= 0).sum() >= 3
    np.testing.assert_array_equal(packed.diverged_at, res.diverged_at)
    np.testing.assert_array_equal(packed.reached_at, res.steps_to_target)
    np.testing.assert_array_equal(packed.alive, res.diverged_at < 0)
    np.testing.assert_array_equal(packed.count, np.where(res.diverged_at < 0, STEPS,
                                                         res.diverged_at))
    # float64 through the same formulas in another order (G from 2 splits, per config): a few
    # eps per step, summed over 30 steps; a diverging config amplifies every difference by
    # about its loss growth, so its tolerance grows with it
    growth = np.maximum(1.0, np.nanmax(res.loss, axis=1) / res.loss[:, 0])
    We = W[:, :d].reshape(C, k, d)
    for c in range(C):
        rtol = 1e-12 * growth[c]
        np.testing.assert_allclose(packed.log[c], res.loss[c], rtol=rtol)
        scale = np.abs(res.end_to_end[c]).max()
        np.testing.assert_allclose(We[c], res.end_to_end[c], rtol=rtol, atol=rtol * scale)
        np.testing.assert_allclose(We[c], layout.end_to_end(packed)[c], rtol=0,
                                   atol=1e-13 * scale)
    assert growth[9] > 1e3 and (np.delete(growth, 9) == 1).all()


def _one_launch(k=3, d=5, t=2, steps=10, seed=0):
    cfgs = up.mixed_grid(k)
    losses = [config_loss(c, "l2") for c in cfgs]
    packed, W = up.start(cfgs, losses, d, k, np.float64, n_records=4)
    rng = np.random.default_rng(seed)
    S, m = 2, 20
    Gpart = rng.normal(size=(S, len(cfgs) * k, d + 2))
    Lpart = rng.uniform(0, 1, size=(S, len(cfgs) * k))
    return packed, W, Gpart, Lpart, np.array([t]), S, m, k, d, steps


def test_twin_one_launch_semantics():
    packed, W, Gpart, Lpart, clock, S, m, k, d, steps = _one_launch(t=2, steps=10)
    packed = packed._replace(alive=packed.alive.copy())
    packed.alive[1] = 0                                  # frozen: nothing changes
    Lpart[:, 2 * k] = np.inf                             # config 2: non-finite loss -> diverged
    packed.target[3] = 10.0                              # config 3: crosses its target
    before = [a.copy() for a in packed]
    W0 = W.copy()
    new, W1 = update.update_twin(packed, Gpart, Lpart, W, clock, S, m, k, d, steps, 2)
    for a, b in zip(packed, before):                     # inputs untouched
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(W, W0)
    assert new.alive[1] == 0 and new.diverged_at[1] == -1
    assert new.alive[2] == 0 and new.diverged_at[2] == 2
    assert new.reached_at[3] == 2 and (np.delete(new.reached_at, 3) == -1).all()
    for c in (1, 2):
        rows = slice(c * k, (c + 1) * k)
        np.testing.assert_array_equal(W1[rows], W0[rows])
        for a, b in zip(layout.unpack_params(new, c), layout.unpack_params(packed, c)):
            np.testing.assert_array_equal(a, b)
        assert new.count[c] == 0
    assert (np.delete(new.count, [1, 2]) == 1).all()
    assert not np.array_equal(W1[:k], W0[:k])
    loss = Lpart.sum(axis=0).reshape(-1, k).sum(axis=1) / (packed.p * m)
    np.testing.assert_allclose(new.log[:, 1], loss, rtol=4 * EPS)     # t = 2 = 1 * log_every
    assert np.isnan(np.delete(new.log, 1, axis=1)).all()


def test_twin_last_step_logs_and_does_not_update():
    packed, W, Gpart, Lpart, clock, S, m, k, d, steps = _one_launch(t=10, steps=10)
    new, W1 = update.update_twin(packed, Gpart, Lpart, W, clock, S, m, k, d, steps, 4)
    np.testing.assert_array_equal(W1, W)
    np.testing.assert_array_equal(new.theta, packed.theta)
    assert (new.count == 0).all()
    assert np.isfinite(new.log[:, -1]).all() and np.isnan(new.log[:, :-1]).all()
