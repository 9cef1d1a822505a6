"""gl_xpass (kernels/xpass.cu) run on the CPU through tests/emu (g++, real block semantics,
ThreadSanitizer), against the float64 twin gpulinear.cuda.xpass.xpass_twin.

Each case is one TSan-instrumented launch at small sizes (128 OS threads per block, blocks one
after another): a data race on shared memory exits with code 66 and fails the test.  Tolerance:
float32: the kernel's error against the float64 twin may be at most 2x the error of the same
arithmetic done by NumPy in float32 (floored at one ulp of the largest output, in case NumPy is
exact by luck).  float64: NumPy in float64 IS the twin (its error is 0, no yardstick), so the
bound is `rounding_scale`, the typical rounding error of sums done in float64 (the kernel stays
3-10x below it in the cases here).
"""
import pathlib
import re
import sys

import numpy as np
import pytest

from gpulinear.cuda import _loader
from gpulinear.cuda.xpass import THREADS, TILES, padded, plan_xpass, xpass_twin

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))   # tests/emu, any import mode
from emu import harness  # noqa: E402

pytestmark = [pytest.mark.emu,
              pytest.mark.skipif(harness.GXX is None,
                                 reason="g++ not found: the CUDA emulation tests compile the "
                                        "kernel with g++ -fsanitize=thread")]

SENTINEL = 7.25          # Gpart's padding columns start as this and must stay so
P_CYCLE = (2.0, 4.0, 3.5)


def problem(R, m, d, k, dtype, n_sm, seed=0):
    rng = np.random.default_rng(seed)
    plan = plan_xpass(R, m, d, k, dtype, n_sm=n_sm)
    W = padded((rng.normal(size=(R, d)) / np.sqrt(d)).astype(dtype), plan.ldw)
    X = padded(rng.normal(size=(m, d)).astype(dtype), plan.ldx)
    Yt = rng.normal(size=(k, m)).astype(dtype)
    prow = np.array([P_CYCLE[(i + seed) % 3] for i in range(R)], dtype=dtype)
    Gpart = np.full((plan.splits, R, plan.ldg), SENTINEL, dtype=dtype)
    return plan, W, X, Yt, prow, Gpart


def same_precision(W, X, Yt, prow, S, mps, d, k):
    """The twin's arithmetic in the inputs' own dtype (NumPy/BLAS): the error yardstick."""
    dt = W.dtype.type
    W, X, p = W[:, :d], X[:, :d], prow[:, None]
    R, m = W.shape[0], X.shape[0]
    G, L = np.zeros((S, R, d), dtype=dt), np.zeros((S, R), dtype=dt)
    for s in range(S):
        j = slice(s * mps, min(m, (s + 1) * mps))
        r = W @ X[j].T - Yt[np.arange(R) % k][:, j]
        a = np.abs(r)
        L[s] = (a ** p).sum(axis=1, dtype=dt)
        G[s] = ((a ** (p - dt(2))) * r) @ X[j]
    return G, L


def rounding_scale(W, X, Yt, prow, plan):
    """Typical rounding error of G and L when every sum runs in the kernel's precision: a
    residual from d + 1 terms is off by ~sqrt(d + 1) eps sum|terms|, propagated to first order
    through |r|^p and |r|^(p-2) r; each example's rounding adds eps |term|; independent errors
    of a split's examples add in quadrature (root of the sum of squares)."""
    d, S, mps, k = plan.d, plan.splits, plan.m_per_split, plan.k
    eps = np.finfo(plan.dtype).eps
    W, X = W[:, :d].astype(np.float64), X[:, :d].astype(np.float64)
    p = prow.astype(np.float64)[:, None]
    R, m = W.shape[0], X.shape[0]
    Yr = Yt.astype(np.float64)[np.arange(R) % k]
    a = np.abs(W @ X.T - Yr)
    dr = np.sqrt(d + 1) * eps * (np.abs(W) @ np.abs(X).T + np.abs(Yr))
    dG = (p - 1) * a ** (p - 2) * dr + eps * a ** (p - 1)      # per example, times |x_jc|
    dL = p * a ** (p - 1) * dr + eps * a ** p
    G, L = np.zeros((S, R, d)), np.zeros((S, R))
    for s in range(S):
        j = slice(s * mps, min(m, (s + 1) * mps))
        G[s] = np.sqrt(dG[:, j] ** 2 @ X[j] ** 2)
        L[s] = np.sqrt((dL[:, j] ** 2).sum(axis=1))
    return G.max(), L.max()


def check_against_twin(res, plan, W, X, Yt, prow):
    d, S, mps, k = plan.d, plan.splits, plan.m_per_split, plan.k
    Gt, Lt = xpass_twin(W, X, Yt, prow, S, mps, d, k)
    Gn, Ln = same_precision(W, X, Yt, prow, S, mps, d, k)
    scales = rounding_scale(W, X, Yt, prow, plan)
    for name, got, ref, yard, scale in (("G", res.Gpart[:, :, :d], Gt, Gn, scales[0]),
                                        ("L", res.Lpart, Lt, Ln, scales[1])):
        assert np.all(np.isfinite(got)), name
        err = np.abs(got.astype(np.float64) - ref).max()
        err_np = np.abs(yard.astype(np.float64) - ref).max()
        if plan.dtype == "float32":
            bound = 2 * max(err_np, np.finfo(np.float32).eps * np.abs(ref).max())
        else:
            bound = scale
        assert err <= bound, f"{name}: kernel error {err:.3g} > {bound:.3g} (NumPy {err_np:.3g})"
    # padding columns of Gpart are never written
    assert np.all(res.Gpart[:, :, d:] == SENTINEL)


# (R, m, d, k, n_sm, expected S): R = 1; R, m, d off every tile; k = 1 and 3; d above one
# window (two windows: Z recomputed, only window 0 writes Lpart); S = 1 and 3.
CASES = {
    "float32": [(1, 5, 3, 1, 132, 1), (37, 75, 13, 1, 3, 3), (9, 70, 130, 3, 3, 3),
                (33, 40, 7, 3, 132, 2)],
    "float64": [(1, 5, 3, 1, 132, 1), (19, 40, 131, 1, 6, 3), (21, 35, 10, 3, 1, 1)],
}


@pytest.fixture(scope="module")
def source():
    return _loader.kernel_source("xpass.cu")


@pytest.mark.parametrize("dtype,case", [(dt, c) for dt, cs in CASES.items() for c in cs],
                         ids=lambda v: str(v))
def test_xpass_matches_twin(source, dtype, case):
    R, m, d, k, n_sm, S = case
    plan, W, X, Yt, prow, Gpart = problem(R, m, d, k, dtype, n_sm, seed=R + d)
    assert plan.splits == S and plan.grid[2] == -(-d // plan.tile_d)
    res = harness.run_xpass(harness.build(source, dtype), plan, W, X, Yt, prow, Gpart,
                            clock0=41)
    assert res.returncode == 0, res.stderr[-4000:]
    check_against_twin(res, plan, W, X, Yt, prow)
    assert res.clock == 42                          # one increment per launch


def test_xpass_clock_null_and_bitwise_repeatable(source):
    """clock = nullptr is allowed (counter untouched); two launches agree bit for bit."""
    plan, W, X, Yt, prow, Gpart = problem(37, 75, 13, 1, "float32", 3)
    exe = harness.build(source, "float32")
    a = harness.run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=True, clock0=0)
    b = harness.run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=False, clock0=5)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.clock == 1 and b.clock == 5
    assert np.array_equal(a.Gpart, b.Gpart) and np.array_equal(a.Lpart, b.Lpart)


def test_missing_barrier_fails(source):
    """Proof that this suite can fail: without the barrier that publishes a shared X/W window
    before the Z pass reads it, the run reports a race (or, at worst, wrong numbers)."""
    marker = "__syncthreads();                       // the window's tiles are visible"
    assert source.count(marker) == 1
    broken = source.replace(marker, "", 1)
    plan, W, X, Yt, prow, Gpart = problem(37, 75, 13, 1, "float32", 3)
    res = harness.run_xpass(harness.build(broken, "float32"), plan, W, X, Yt, prow, Gpart)
    if res.returncode == 0:
        with pytest.raises(AssertionError):
            check_against_twin(res, plan, W, X, Yt, prow)
    else:
        assert res.race, res.stderr[-4000:]


def test_python_tiles_mirror_the_source(source):
    """plan_xpass's TILES / THREADS are copies of the .cu's constants: keep them equal."""
    for dt, ctype in (("float32", "float"), ("float64", "double")):
        m = re.search(r"struct gl_xpass_tiles<%s>\s*\{\s*static constexpr int TR = (\d+), "
                      r"MT = (\d+), DC = (\d+);" % ctype, source)
        assert m, ctype
        assert tuple(int(v) for v in m.groups()) == TILES[dt]
    assert int(re.search(r"GL_XPASS_THREADS = (\d+);", source).group(1)) == THREADS
