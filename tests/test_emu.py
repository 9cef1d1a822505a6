"""gl_xpass (kernels/xpass.cu) run on the CPU through tests/emu (g++, real block semantics),
against the float64 twin gpulinear.cuda.xpass.xpass_twin.

Each case is one launch at small sizes (128 OS threads per block, two blocks at a time in a
shuffled order, garbage-filled shared memory, checked vector accesses and barriers, guard zones
around the global buffers): under ThreadSanitizer (a data race exits 66), and for the cases with
several d-windows also under AddressSanitizer.  Tolerance: float32: the kernel's error against
the float64 twin may be at most 2x the error of the same arithmetic done by NumPy in float32, the
larger of BLAS's and of serial running sums (a GPU thread's order; floored at one ulp of the
largest output, in case NumPy is exact by luck).  float64: NumPy in
float64 IS the twin (its error is 0, no yardstick), so the bound is `rounding_scale`, the typical
rounding error of sums done in float64 (the kernel stays 3-10x below it in the cases here).
tests/test_emu_mutations.py shows that this check turns red on the faults it is meant to catch.
"""
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from gpulinear.cuda import _loader
from gpulinear.cuda.xpass import MIN_BLOCKS, THREADS, TILES, padded, plan_xpass, shared_bytes, \
    xpass_twin

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


def same_precision(W, X, Yt, prow, S, mps, d, k, serial=False):
    """The twin's arithmetic in the inputs' own dtype: the error yardstick.  serial=False: NumPy's
    BLAS (OpenBLAS sums a dot product in 8-16 SIMD lanes); serial=True: every dot product and
    every sum over examples as one running sum (np.cumsum), the order a GPU thread of a plain
    CuPy/cuBLAS GEMM accumulates in, and the kernel's."""
    dt = W.dtype.type
    W, X, p = W[:, :d], X[:, :d], prow[:, None]
    R, m = W.shape[0], X.shape[0]
    G, L = np.zeros((S, R, d), dtype=dt), np.zeros((S, R), dtype=dt)

    def matmul(A, B):                    # (r, n) @ (n, c)
        if not serial:
            return A @ B
        return np.cumsum(A[:, :, None] * B[None, :, :], axis=1, dtype=dt)[:, -1, :]
    for s in range(S):
        j = slice(s * mps, min(m, (s + 1) * mps))
        r = matmul(W, X[j].T) - Yt[np.arange(R) % k][:, j]
        a = np.abs(r)
        L[s] = np.cumsum(a ** p, axis=1, dtype=dt)[:, -1] if serial else \
            (a ** p).sum(axis=1, dtype=dt)
        G[s] = matmul((a ** (p - dt(2))) * r, X[j])
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
    Gs, Ls = same_precision(W, X, Yt, prow, S, mps, d, k, serial=True)
    scales = rounding_scale(W, X, Yt, prow, plan)
    for name, got, ref, yards, scale in (("G", res.Gpart[:, :, :d], Gt, (Gn, Gs), scales[0]),
                                         ("L", res.Lpart, Lt, (Ln, Ls), scales[1])):
        assert np.all(np.isfinite(got)), name
        err = np.abs(got.astype(np.float64) - ref).max()
        # the plain computation's error: the larger of BLAS's and the serial order's (d = 300,
        # p = 4: the kernel's error is up to 2.1x BLAS's, 0.5-1.5x the serial order's)
        err_np = max(np.abs(y.astype(np.float64) - ref).max() for y in yards)
        if plan.dtype == "float32":
            bound = 2 * max(err_np, np.finfo(np.float32).eps * np.abs(ref).max())
        else:
            bound = scale
        assert err <= bound, f"{name}: kernel error {err:.3g} > {bound:.3g} (NumPy {err_np:.3g})"
    # padding columns of Gpart are never written
    assert np.all(res.Gpart[:, :, d:] == SENTINEL)


# (R, m, d, k, n_sm, S, tiles per split, windows): R = 1; R, m, d off every tile; k = 1 and 3;
# odd d, so the row pitch ld > d (13 -> 16, 130 -> 132, 131 -> 132); several d-windows (Z summed
# over windows, Gpart read-modify-written per window) with several tiles per split and a short
# last tile and window; S = 1, 2 and 3 (n_sm = 1: waves of 4 blocks force splits).
CASES = {
    "float32": [(1, 5, 3, 1, 132, 1, 1, 1), (37, 75, 13, 1, 3, 3, 1, 1),
                (9, 150, 300, 3, 1, 3, 2, 3), (33, 40, 7, 3, 132, 2, 1, 1),
                (40, 130, 130, 1, 1, 2, 3, 2)],
    "float64": [(1, 5, 3, 1, 132, 1, 1, 1), (19, 40, 131, 1, 1, 2, 2, 2),
                (69, 35, 10, 3, 1, 1, 3, 1), (6, 70, 260, 3, 1, 3, 2, 3)],
}
MULTI_WINDOW = [(dt, c) for dt, cs in CASES.items() for c in cs if c[7] > 1]


@pytest.fixture(scope="module")
def source():
    return _loader.kernel_source("xpass.cu")


def run_case(source, dtype, case, mode="tsan", **kw):
    R, m, d, k, n_sm, S, per, nwin = case
    plan, W, X, Yt, prow, Gpart = problem(R, m, d, k, dtype, n_sm, seed=R + d)
    assert (plan.splits, plan.m_per_split // plan.tile_examples, -(-d // plan.tile_d)) == \
        (S, per, nwin), plan
    res = harness.run_xpass(harness.build(source, dtype, mode), plan, W, X, Yt, prow, Gpart,
                            clock0=41, **kw)
    return res, (plan, W, X, Yt, prow)


@pytest.mark.parametrize("dtype,case", [(dt, c) for dt, cs in CASES.items() for c in cs],
                         ids=lambda v: str(v))
def test_xpass_matches_twin(source, dtype, case):
    res, args = run_case(source, dtype, case)
    assert res.returncode == 0, res.stderr[-4000:]
    check_against_twin(res, *args)
    assert res.clock == 42                          # one increment per launch


@pytest.mark.parametrize("dtype,case", MULTI_WINDOW, ids=lambda v: str(v))
def test_xpass_under_address_sanitizer(source, dtype, case):
    """Every scalar access too (Yt, prow, Gpart's read-modify-write, D and L in shared memory)
    stays inside its buffer: ASan with exact-size allocations, no guard zones."""
    res, args = run_case(source, dtype, case, mode="asan")
    assert res.returncode == 0, res.stderr[-4000:]
    check_against_twin(res, *args)


def test_xpass_clock_null_and_bitwise_repeatable(source):
    """clock = nullptr is allowed (counter untouched); launches agree bit for bit whatever the
    block order and how many blocks run at once (one writer per output, fixed sum orders)."""
    plan, W, X, Yt, prow, Gpart = problem(40, 130, 130, 1, "float32", 1)
    exe = harness.build(source, "float32")
    a = harness.run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=True, clock0=0,
                          concurrency=1, seed=0)
    b = harness.run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=False, clock0=5,
                          concurrency=3, seed=7)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.clock == 1 and b.clock == 5
    assert np.array_equal(a.Gpart, b.Gpart) and np.array_equal(a.Lpart, b.Lpart)


def test_float32_denormals_are_not_flushed(source):
    """The floating-point contract: residuals of ~1e-11 with p = 4 give |r|^3 ~ 1e-33 and |r|^4
    ~ 1e-44 (a float32 denormal).  The emulation (like the GPU under any -ftz, see
    tests/test_fp_contract.py) keeps them: L equals the twin rounded to float32, not 0."""
    R, m, d = 4, 32, 4
    plan = plan_xpass(R, m, d, 1, "float32")
    rng = np.random.default_rng(3)
    X = padded(rng.normal(size=(m, d)).astype(np.float32), plan.ldx)
    W = padded(np.zeros((R, d), np.float32), plan.ldw)
    Yt = np.full((1, m), 1e-11, np.float32) * rng.choice([-1, 1], size=(1, m)).astype(np.float32)
    prow = np.full(R, 4.0, np.float32)
    Gpart = np.full((plan.splits, R, plan.ldg), SENTINEL, np.float32)
    res = harness.run_xpass(harness.build(source, "float32"), plan, W, X, Yt, prow, Gpart)
    assert res.returncode == 0, res.stderr[-4000:]
    Gt, Lt = xpass_twin(W, X, Yt, prow, plan.splits, plan.m_per_split, d, 1)
    assert 0 < Lt.min() < np.finfo(np.float32).tiny                    # a denormal sum
    assert np.all(res.Lpart > 0)
    np.testing.assert_allclose(res.Lpart, Lt, rtol=0.05)                # few denormal bits
    np.testing.assert_allclose(res.Gpart[:, :, :d], Gt, rtol=1e-5, atol=1e-38)


def test_python_mirrors_the_source(source):
    """plan_xpass's TILES / MIN_BLOCKS / THREADS / shared_bytes are copies of the .cu's
    constants (read from the compiled kernel itself): keep them equal."""
    for dt in ("float32", "float64"):
        out = subprocess.run([str(harness.build(source, dt, "plain")), "--constants"],
                             capture_output=True, text=True, check=True).stdout
        got = dict(kv.split("=") for kv in out.split())
        TR, MT, DC = TILES[dt]
        assert {k: int(v) for k, v in got.items()} == dict(
            TR=TR, MT=MT, DC=DC, MINB=MIN_BLOCKS[dt], THREADS=THREADS, SMEM=shared_bytes(dt))
    assert re.search(r"__launch_bounds__\(GL_XPASS_THREADS, gl_xpass_tiles<T>::MINB\)", source)


@pytest.mark.parametrize("scenario,code,message", [
    ("read_unwritten", 0, "OK garbage"),
    ("skip_barrier", harness.FAULT_EXIT, "divergent barrier"),
    ("misaligned_load", harness.FAULT_EXIT, "misaligned 16-byte vector load"),
    ("load_past_global", harness.FAULT_EXIT, "out-of-bounds 16-byte vector load"),
    ("read_before_wait", 0, "OK garbage before the wait"),
    ("never_waited", harness.FAULT_EXIT, "never waited for"),
    ("concurrency", 0, "OK 2 blocks at once"),
])
def test_emulator_catches(scenario, code, message):
    """The emulator's own checks, one tiny rule-breaking kernel each (tests/emu/selftest.cpp):
    unwritten shared memory is garbage, a skipped barrier and bad vector accesses fault, a
    cp.async destination holds garbage until the wait, two blocks run at the same time."""
    proc = subprocess.run([str(harness.build_selftest()), scenario], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == code and message in proc.stdout + proc.stderr, \
        (proc.returncode, proc.stdout, proc.stderr[-2000:])


def test_too_little_shared_memory_traps(source):
    """A launch with less dynamic shared memory than the kernel's layout stops (__trap) instead
    of corrupting: the plan's shared_bytes is the launch argument."""
    plan, W, X, Yt, prow, Gpart = problem(37, 75, 13, 1, "float32", 3)
    exe = harness.build(source, "float32", "plain")
    res = harness.run_xpass(exe, plan._replace(shared_bytes=plan.shared_bytes - 16), W, X, Yt,
                            prow, Gpart)
    assert res.fault and "__trap()" in res.stderr, res.stderr[-2000:]
