"""Proof that the emulation suite (tests/test_emu.py) catches what the hardware would: each
mutation below is applied to a COPY of kernels/xpass.cu and the emulated run must fail, for the
reason the mutation is about.

  a  the shared-memory pitch of D breaks the 16-byte alignment of its vector loads
     -> on a GPU: misaligned address error; here: the vector-load alignment assertion;
  b  the `j < jend` bound on the X tile load is dropped (reads past X in the last split)
     -> illegal address / garbage; here: the out-of-bounds check of the emulated cp.async;
  c  the "reload W for every window" flag is simplified to "load W once per split"
     -> with d > 128 and several tiles per split, wrong partial sums; here: the twin comparison;
  e  the cp.async wait is dropped -> tiles read before they land; here: the copies never land;
  barrier k  any one __syncthreads() of the kernel deleted -> a data race (ThreadSanitizer), or
     wrong numbers.

The mutations that need no race detector are built without ThreadSanitizer ("plain", -O2),
which keeps the file to ~1 minute on two cores.  A mutation whose target text is missing fails
(so edits of the kernel must keep this file in step), and so does a barrier count that changed.
"""
import pathlib
import re
import sys

import pytest

from gpulinear.cuda import _loader

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))   # tests/emu, any import mode
from emu import harness  # noqa: E402
from test_emu import check_against_twin, problem  # noqa: E402

pytestmark = [pytest.mark.emu,
              pytest.mark.skipif(harness.GXX is None, reason="g++ not found")]

# float32: 3 d-windows (300 = 2 x 128 + 44), 2 tiles in each of 3 splits (the last split's tile
# short: 150 = 4 x 32 + 22), k = 3
CASE = (9, 150, 300, 3, 1)
SOURCE = _loader.kernel_source("xpass.cu")
KERNEL_START = SOURCE.index("gl_xpass(\n")               # the kernel's body, after the helpers
BARRIER = "__syncthreads();"
N_BARRIERS = SOURCE.count(BARRIER, KERNEL_START)

MUTATIONS = {
    "a_D_pitch_breaks_16B_alignment": (
        "static constexpr int TRP = TR + V;", "static constexpr int TRP = TR + 1;", "misaligned"),
    "b_X_tile_load_without_example_bound": (
        "const bool ok = j0 + jr < jend && cc < kend;", "const bool ok = cc < kend;",
        "out-of-bounds 16-byte cp.async source"),
    "c_W_loaded_once_despite_several_windows": (
        "if (zstage && (nwin > 1 || t == 0))", "if (zstage && t == 0)", None),
    "e_cp_async_wait_dropped": (
        "gl_cp_async_wait<1>();", "", "never waited for"),
}


def run(source, mode):
    R, m, d, k, n_sm = CASE
    plan, W, X, Yt, prow, Gpart = problem(R, m, d, k, "float32", n_sm, seed=1)
    assert plan.splits == 3 and plan.m_per_split == 64 and -(-plan.d // plan.tile_d) == 3
    res = harness.run_xpass(harness.build(source, "float32", mode), plan, W, X, Yt, prow, Gpart)
    return res, (plan, W, X, Yt, prow)


def test_unmutated_copy_passes():
    """The yardstick: the same case, both builds, passes unmutated."""
    for mode in ("plain", "tsan"):
        res, args = run(SOURCE, mode)
        assert res.returncode == 0, res.stderr[-3000:]
        check_against_twin(res, *args)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught(name):
    old, new, message = MUTATIONS[name]
    assert SOURCE.count(old) == 1, f"mutation {name}: target text not found once in xpass.cu"
    res, args = run(SOURCE.replace(old, new), "plain")
    if message is not None:                       # an emulated hardware fault, for this reason
        assert res.fault and message in res.stderr, (res.returncode, res.stderr[-3000:])
    else:                                         # runs, but the numbers are wrong
        assert res.returncode == 0, res.stderr[-3000:]
        with pytest.raises(AssertionError):
            check_against_twin(res, *args)


def test_barrier_count():
    """The kernel has the barriers this file deletes one by one: a new one is covered by the
    parametrisation below automatically; this just says how many there were when written."""
    assert N_BARRIERS == 4, N_BARRIERS


@pytest.mark.parametrize("k", range(N_BARRIERS))
def test_deleting_any_barrier_is_caught(k):
    starts = [m.start() for m in re.finditer(re.escape(BARRIER), SOURCE)
              if m.start() > KERNEL_START]
    at = starts[k]
    line = SOURCE.count("\n", 0, at) + 1
    broken = SOURCE[:at] + SOURCE[at + len(BARRIER):]
    res, args = run(broken, "tsan")
    if res.returncode == 0:
        with pytest.raises(AssertionError):
            check_against_twin(res, *args)
    else:
        assert res.race or res.fault, (line, res.returncode, res.stderr[-3000:])
