"""gpulinear.cuda.xpass on the CPU: the twin against gpulinear.losses.Lp, the split planner, and
launch_xpass's checks and arguments through the RecordingLauncher (nothing is compiled or run).
"""
import numpy as np
import pytest

from gpulinear.cuda.launch import RecordingLauncher
from gpulinear.cuda.xpass import THREADS, padded, plan_xpass, launch_xpass, xpass_twin
from gpulinear.losses import Lp


@pytest.mark.parametrize("p", [2.0, 4.0, 3.5])
@pytest.mark.parametrize("k", [1, 3])
def test_twin_matches_lp_loss_and_split_sums(p, k):
    """One split: Lpart summed over a config's rows is p m times Lp's value, Gpart = l'(R) X;
    S splits add up to the one-split result."""
    rng = np.random.default_rng(k)
    C, m, d = 4, 23, 6
    W, X, Y = rng.normal(size=(C, k, d)), rng.normal(size=(m, d)), rng.normal(size=(m, k))
    Z = W @ X.T                                             # (C, k, m)
    out = np.empty_like(Z)
    value = Lp(p).value_and_grad(Z, Y.T.copy(), out, np.empty_like(Z))
    G1, L1 = xpass_twin(W.reshape(C * k, d), X, Y.T, np.full(C * k, p), 1, m, d, k)
    np.testing.assert_allclose(L1[0].reshape(C, k).sum(axis=1), value * p * m, rtol=1e-12)
    np.testing.assert_allclose(G1[0].reshape(C, k, d), out @ X, rtol=1e-12, atol=1e-12)
    G3, L3 = xpass_twin(W.reshape(C * k, d), X, Y.T, np.full(C * k, p), 3, 8, d, k)
    np.testing.assert_allclose(G3.sum(axis=0), G1[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(L3.sum(axis=0), L1[0], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plan_fills_the_gpu_and_splits_whole_tiles(dtype):
    # few rows (a Fig-3 grid, R = 60): splits bring the blocks to >= 2 per SM
    plan = plan_xpass(60, 2565, 128, 1, dtype)
    ex_tiles = -(-2565 // plan.tile_examples)
    assert plan.grid[0] * plan.grid[1] * plan.grid[2] >= 2 * 132 or plan.splits == ex_tiles
    assert plan.m_per_split % plan.tile_examples == 0
    assert (plan.splits - 1) * plan.m_per_split < 2565 <= plan.splits * plan.m_per_split
    assert plan.block == (THREADS, 1, 1) and plan.ldx * np.dtype(dtype).itemsize % 16 == 0
    # many rows: the row tiles alone fill it
    assert plan_xpass(64 * 1024, 2565, 128, 1, dtype).splits == 1
    # never more splits than example tiles
    tiny = plan_xpass(1, 40, 3, 1, dtype)
    assert tiny.splits <= -(-40 // tiny.tile_examples)
    with pytest.raises(ValueError, match="k = 3"):
        plan_xpass(10, 40, 3, 3, dtype)


def arrays(plan, dtype):
    S, R, m, k = plan.splits, plan.R, plan.m, plan.k
    return dict(W=np.zeros((R, plan.ldw), dtype), X=np.zeros((m, plan.ldx), dtype),
                Yt=np.zeros((k, m), dtype), prow=np.full(R, 2.0, dtype),
                Gpart=np.zeros((S, R, plan.ldg), dtype), Lpart=np.zeros((S, R), dtype))


def test_launch_records_one_launch_with_int32_sizes_and_null_clock():
    plan = plan_xpass(30, 100, 13, 3, "float32")
    rec = RecordingLauncher()
    a = arrays(plan, "float32")
    launch_xpass(rec, plan, **a)
    (ln,) = rec.launches
    assert ln.name == "xpass" and ln.grid == plan.grid and ln.block == plan.block
    kinds = [x.kind for x in ln.args]
    assert kinds == ["array", "scalar", "array", "scalar", "array", "array", "array", "scalar",
                     "array", "scalar", "scalar", "scalar", "scalar", "scalar", "scalar"]
    assert all(x.dtype == "int32" for x in ln.args[9:14])
    assert [x.value for x in ln.args[9:14]] == [30, 100, 13, 3, plan.m_per_split]
    assert ln.args[-1].value == 0                               # null clock
    launch_xpass(rec, plan, **a, clock=np.zeros(1, np.int64))
    assert rec.launches[-1].args[-1].kind == "array"


@pytest.mark.parametrize("bad,match", [
    (dict(W=np.zeros((30, 16), np.float64)), "dtype float64"),
    (dict(X=np.zeros((100, 13), np.float32)), r"shape \(100, 13\)"),
    (dict(Gpart=np.zeros((1, 30, 32), np.float32)[:, :, ::2]), "C-contiguous"),
    (dict(prow=np.zeros(31, np.float32)[1:]), "16-byte"),
    (dict(clock=np.zeros(1, np.int32)), "clock has dtype int32"),
])
def test_launch_rejects_bad_arrays(bad, match):
    plan = plan_xpass(30, 100, 13, 3, "float32")
    a = arrays(plan, "float32")
    if "Gpart" in bad:
        bad = dict(Gpart=np.zeros((plan.splits, 30, 2 * plan.ldg), np.float32)[:, :, ::2])
    a.update(bad)
    with pytest.raises(ValueError, match=match):
        launch_xpass(RecordingLauncher(), plan, **a)


def test_padded_zero_fills():
    a = np.arange(6.0).reshape(2, 3)
    p = padded(a, 4)
    assert p.shape == (2, 4) and p.flags.c_contiguous and np.array_equal(p[:, :3], a)
    assert np.all(p[:, 3] == 0)
    with pytest.raises(ValueError):
        padded(a, 2)
