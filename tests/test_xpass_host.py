"""gpulinear.cuda.xpass on the CPU: the twin against gpulinear.losses.Lp, the split planner, and
launch_xpass's checks and arguments through the RecordingLauncher (nothing is compiled or run).
"""
import numpy as np
import pytest

from gpulinear.cuda.launch import RecordingLauncher
from gpulinear.cuda import _loader
from gpulinear.cuda.xpass import (MIN_BLOCKS, THREADS, blocks_per_sm, choose_splits, launch_xpass,
                                  padded, plan_xpass, shared_bytes, xpass_twin)
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


def test_occupancy_calculator():
    """The CUDA occupancy calculator's rules for sm_90, on cases worked by hand."""
    # this kernel: 128 registers (4 warps x 4096 = 16384: 4 blocks), 54784 + 1024 B (4 blocks)
    assert blocks_per_sm(128, 54784) == 4
    # the previous kernel: 138 registers round to 144 a thread -> 4608 a warp -> 3 blocks
    assert blocks_per_sm(138, 40448) == 3
    # 80 registers would allow 6 blocks, its 40448 B of shared memory only 5
    assert blocks_per_sm(80, 40448) == 5
    assert blocks_per_sm(32, 0, threads=1024) == 2           # threads: 2048 a SM
    assert blocks_per_sm(16, 0, threads=32) == 32            # the 32-blocks limit
    assert blocks_per_sm(255, 0) == 2                        # 8192 a warp x 4 warps
    assert blocks_per_sm(32, 300_000) == 0                   # does not fit at all
    assert shared_bytes("float32") == 54784 and shared_bytes("float64") == 51968


def test_choose_splits_fills_whole_waves():
    # B = 8192 Ethanol configs (256 row tiles, 81 example tiles, 528 blocks a wave): 2 splits
    # make 512 blocks, one wave 97 % full; 1 split leaves it half empty, 3 need two waves
    assert choose_splits(256, 81, 528) == (2, 41)
    # a Fig-3 grid (2 row tiles): every example tile its own block, still one wave
    assert choose_splits(2, 81, 528) == (81, 1)
    # rows alone make 4 waves: no split (a split would double the waves)
    assert choose_splits(2048, 81, 528) == (1, 81)
    for rt, et, wave in [(32, 81, 528), (1, 1, 528), (7, 938, 132), (300, 5, 528)]:
        S, per = choose_splits(rt, et, wave)
        assert (S - 1) * per < et <= S * per                 # whole tiles, none empty
    # the O(sqrt) search finds what trying every tile count finds
    rng = np.random.default_rng(0)
    for rt, et, wave in zip(rng.integers(1, 3000, 60), rng.integers(1, 3000, 60),
                            rng.choice([132, 264, 528, 1056], 60)):
        best = min(((-(-rt * -(-et // per) // wave)) * (per + 1), -(-et // per), per)
                   for per in range(1, et + 1))
        assert choose_splits(int(rt), int(et), int(wave)) == best[1:], (rt, et, wave)
    assert choose_splits(1, 2**25, 132)[0] <= 2**25         # large m: fast (sqrt search)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plan_fills_the_gpu_and_splits_whole_tiles(dtype):
    for R, m, d, k in [(60, 2565, 128, 1), (1024, 2565, 128, 1), (8192, 2565, 128, 1),
                       (1000, 60000, 784, 10), (3, 40, 3, 3)]:
        plan = plan_xpass(R, m, d, k, dtype)
        ex_tiles = -(-m // plan.tile_examples)
        blocks = plan.grid[0] * plan.grid[1]
        assert plan.grid[2] == 1 and plan.block == (THREADS, 1, 1)
        assert plan.blocks_per_sm == MIN_BLOCKS[dtype] and plan.shared_bytes == shared_bytes(dtype)
        assert plan.m_per_split % plan.tile_examples == 0
        assert (plan.splits - 1) * plan.m_per_split < m <= plan.splits * plan.m_per_split
        assert plan.splits <= ex_tiles and plan.ldx * np.dtype(dtype).itemsize % 16 == 0
        assert plan.waves == -(-blocks // (plan.blocks_per_sm * 132))
        # whole waves: >= 85 % of the waves' slots busy, or the whole pass is one wave (a small
        # problem, fewer blocks than slots even at one or two example tiles a block)
        assert blocks / (plan.waves * plan.blocks_per_sm * 132) >= 0.85 or plan.waves == 1, \
            (R, plan)
    # the occupancy the planner assumes can come from the device (CuPy's occupancy API)
    few = plan_xpass(8192, 2565, 128, 1, dtype, blocks_per_sm=1)
    assert few.blocks_per_sm == 1 and few.splits <= plan_xpass(8192, 2565, 128, 1, dtype).splits
    with pytest.raises(ValueError, match="k = 3"):
        plan_xpass(10, 40, 3, 3, dtype)
    with pytest.raises(ValueError, match="does not fit"):
        plan_xpass(10, 40, 3, 1, dtype, blocks_per_sm=0)


def test_loader_finds_launch_bounds_entry_points():
    src = ("template <typename T>\n__global__ void __launch_bounds__(128, gl_t<T>::MINB) gl_a(int)"
           " {}\n__global__ void __launch_bounds__(64) gl_b(int) {}\n__global__ void gl_c() {}")
    assert _loader.entry_points(src) == (["gl_a"], ["gl_b", "gl_c"])


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
    assert ln.shared_mem == plan.shared_bytes == shared_bytes("float32")
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


def test_load_kernel_raises_the_shared_memory_limit_once(monkeypatch):
    """On a GPU the kernel's dynamic shared memory (> 48 KB) must be allowed before a launch:
    load_kernel does it once per loaded module (a CuPy stand-in here); a module compiled anew
    (the loader's cache cleared) is loaded and set up anew."""
    import sys
    import types

    from gpulinear.cuda import xpass
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(id=0)))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    modules, made = [], []

    def module(name, device_id):
        if not modules:
            modules.append(types.SimpleNamespace(name=name))
        return modules[-1]

    def get_kernel(source, entry, dtype):
        made.append((source, entry, dtype))
        return types.SimpleNamespace(max_dynamic_shared_size_bytes=0)
    monkeypatch.setattr(_loader, "_module", module)
    monkeypatch.setattr(_loader, "get_kernel", get_kernel)
    monkeypatch.setattr(xpass, "_LOADED", {})
    k = xpass.load_kernel("float32")
    assert k.max_dynamic_shared_size_bytes == shared_bytes("float32") > 48 * 1024
    assert xpass.load_kernel(np.float32) is k and made == [("xpass.cu", "gl_xpass", "float32")]
    modules.clear()                                    # e.g. a test cleared the loader's cache
    assert xpass.load_kernel("float32") is not k and len(made) == 2
